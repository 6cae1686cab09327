"""Flow control in-process, on the real database: unique tasks, one message per task id, the
round's admission of limited messages (concurrency per key, cluster-wide rate), rate-limit
overrides and paused queues. Several real workers: tests/test_flow_process.py."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.utils import timezone

from djqueue import states
from djqueue.broker import operations
from djqueue.broker.flow import Gate
from djqueue.client.base import app
from djqueue.client.unique import delete_released
from djqueue.exceptions import DuplicateTask
from djqueue.models import (
    ControlCommand, FlowGate, Message, PausedQueue, RateLimitOverride, UniqueTask,
)
from djqueue.worker import rounds
from djqueue.worker.loop import Worker
from djqueue.worker.throttle import Throttle
from tasks import add

from .flow_tasks import held, once, paced
from .test_cli_remote import celery

pytestmark = pytest.mark.django_db(transaction=True)


# Unique tasks and task ids.

def test_the_same_task_id_twice_is_one_message() -> None:
    first = add.apply_async((1, 1), task_id="same-id")
    second = add.apply_async((2, 2), task_id="same-id")
    assert first.id == second.id == "same-id"
    assert Message.objects.filter(task_id="same-id").count() == 1


def test_a_unique_key_holds_while_its_message_waits() -> None:
    first = add.apply_async((1, 1), unique_key="k")
    again = add.apply_async((5, 5), unique_key="k")
    assert again.id == first.id and Message.objects.count() == 1
    with pytest.raises(DuplicateTask, match="already queued") as raised:
        add.apply_async((1, 1), unique_key="k", on_duplicate="raise")
    assert raised.value.task_id == first.id
    Message.objects.filter(task_id=first.id).update(state="started")  # a worker started it
    later = add.apply_async((1, 1), unique_key="k")
    assert later.id != first.id and Message.objects.count() == 2
    assert UniqueTask.objects.get().task_id == later.id  # the row was taken over, not added


def test_while_running_and_for_a_period() -> None:
    first = once.delay("x")  # the task's option; the key comes from the arguments
    assert once.delay("x").id == first.id and once.delay("y").id != first.id
    running = add.apply_async((1, 1), unique_key="r", unique="running")
    Message.objects.filter(task_id=running.id).update(state="started")
    assert add.apply_async((1, 1), unique_key="r", unique="running").id == running.id
    Message.objects.filter(task_id=running.id).delete()  # it finished
    assert add.apply_async((1, 1), unique_key="r", unique="running").id != running.id
    period = add.apply_async((1, 1), unique_key="p", unique=60)
    Message.objects.filter(task_id=period.id).delete()  # it ran: the key still holds
    assert add.apply_async((1, 1), unique_key="p", unique=60).id == period.id
    UniqueTask.objects.filter(key="p").update(until=timezone.now() - datetime.timedelta(seconds=1))
    assert add.apply_async((1, 1), unique_key="p", unique=60).id != period.id
    Message.objects.filter(task_id=first.id).update(state="started")  # "x" waits no more
    assert delete_released("default") == 1 and UniqueTask.objects.count() == 3


def test_bad_unique_options_are_refused_before_anything_is_written() -> None:
    with pytest.raises(ValueError, match="unique must be"):
        add.apply_async((1, 1), unique_key="k", unique="forever")
    with pytest.raises(ValueError, match="on_duplicate must be"):
        add.apply_async((1, 1), unique_key="k", on_duplicate="ignore")
    with pytest.raises(ValueError, match="NUL"):
        add.apply_async((1, 1), unique_key="a\x00b")
    assert not Message.objects.exists() and not UniqueTask.objects.exists()


# The round's admission.

def _claim() -> list[int]:
    return [m.id for m in operations("default").claim(["celery"], 50, "test@host", None, 60)]


def _round(gate: Gate, ids: list[int], acks: list[int] = ()) -> set[int]:
    writes = rounds.Round(acks=list(acks), gated={gate: ids})
    return rounds.run("default", app.backend, None, writes, lease_seconds=60).started


def test_at_most_the_limit_of_one_key_starts_and_the_rest_wait_in_the_table() -> None:
    a = [held.apply_async(("a", 0), concurrency_key="a").id for _ in range(3)]
    b = held.apply_async(("b", 0), concurrency_key="b").id
    whole = held.delay("whole", 0).id  # no key: the task's own
    gate = Gate(held.name, None, 2)
    started = _round(gate, _claim())
    rows = {m.task_id: m for m in Message.objects.all()}
    assert {rows[i].task_id for i in rows if rows[i].id in started} == {a[0], a[1], b, whole}
    assert rows[a[2]].state == "ready" and rows[a[2]].available_at > timezone.now()
    assert rows[whole].flow_key == ""
    Message.objects.filter(task_id=a[2]).update(available_at=timezone.now())
    assert _round(gate, _claim()) == set()  # still two of "a" running
    Message.objects.filter(task_id=a[2]).update(available_at=timezone.now())
    assert _round(gate, _claim(), acks=[rows[a[0]].id]) == {rows[a[2]].id}  # one finished


def test_a_cluster_wide_rate_spaces_starts_on_the_database_clock() -> None:
    ids = [paced.delay(str(i)).id for i in range(3)]
    gate = Gate(paced.name, 1.0, None)
    started = _round(gate, _claim())
    rows = {m.task_id: m for m in Message.objects.all()}
    assert started == {rows[ids[0]].id}
    gate_row = FlowGate.objects.get(task_name=paced.name)
    spacing = (gate_row.next_start - rows[ids[0]].started_at).total_seconds()
    assert spacing == 1.0 if connection.vendor == "postgresql" else 0.9 < spacing <= 1.0
    assert {rows[i].state for i in ids[1:]} == {"ready"}
    assert all(rows[i].available_at > timezone.now() for i in ids[1:])
    Message.objects.filter(state="ready").update(available_at=timezone.now())
    assert _round(gate, _claim()) == set()  # within the second: nothing more starts


def test_a_worker_gates_limited_tasks_and_not_the_others() -> None:
    worker = Worker(app, pool="solo", poll_interval=0)
    assert worker.options.get(add.name).gate is None
    assert worker.options.get(held.name).gate == Gate(held.name, None, 2)
    assert worker.options.get(paced.name).gate == Gate(paced.name, 5.0, None)
    assert worker.options.get(paced.name).rate is None  # not the worker's own buckets too


# Rate-limit overrides.

def test_overrides_win_until_reset_and_zero_means_no_limit(settings) -> None:
    settings.CELERY_ANNOTATIONS = {"tasks.add": {"rate_limit": "10/m"}}
    throttle = Throttle(app)
    assert throttle.rate("tasks.add") == "10/m"
    throttle.overrides["tasks.add"] = "0"
    assert throttle.rate("tasks.add") is None
    throttle.overrides["tasks.add"] = "2/s"
    assert throttle.rate("tasks.add") == "2/s"


def test_the_command_line_says_what_was_stored_when_no_worker_replied() -> None:
    status, out, err = celery("control", "rate_limit", "tasks.add", "0", "-t", "0.2")
    assert status == 0 and err == ""
    assert out.startswith("Stored rate-limit override: tasks.add = no limit; it lasts until "
                          "'celery control reset_rate_limit tasks.add'.\nNo worker replied")
    assert RateLimitOverride.objects.get().rate_limit == "0"
    status, out, _ = celery("control", "reset_rate_limit", "tasks.add", "-t", "0.2")
    assert status == 0 and out.startswith("Removed the rate-limit override of tasks.add")
    assert not RateLimitOverride.objects.exists()
    # Nothing stored (bad rate): Celery's "no nodes replied".
    assert celery("control", "rate_limit", "tasks.add", "often", "-t", "0.2")[0] == 69


# Paused queues.

def test_a_paused_queue_is_not_claimed_from_even_after_a_restart() -> None:
    assert celery("control", "pause_queue", "celery", "-t", "0.2")[1].startswith(
        "Stored: queue celery is paused")
    waiting = add.delay(2, 3)
    other = add.apply_async((1, 1), queue="other")
    worker = Worker(app, queues=["celery", "other"], pool="solo", poll_interval=0)
    worker.start()  # a worker started later reads the pause
    for _ in range(3):
        worker.loop()
    assert other.get(timeout=5) == 2
    assert Message.objects.get(task_id=waiting.id).state == "ready"
    app.control.resume_queue("celery")
    worker._control.poll(now=True)  # as NOTIFY would wake it
    for _ in range(3):
        worker.loop()
    assert waiting.get(timeout=5) == 5 and not PausedQueue.objects.exists()
    assert waiting.state == states.SUCCESS


def test_the_admin_goes_back_to_the_configured_limit_and_pauses_queues(admin_client) -> None:
    override = RateLimitOverride.objects.create(task_name="tasks.add", rate_limit="0")
    page = admin_client.get("/admin/djqueue/ratelimitoverride/").content.decode()
    assert "no limit" in page and "Return to the configured rate limit" in page
    admin_client.post("/admin/djqueue/ratelimitoverride/",
                      {"action": "reset_selected", "_selected_action": [override.pk]})
    assert not RateLimitOverride.objects.exists()
    assert ControlCommand.objects.get().name == "reset_rate_limit"  # running workers are told
    assert admin_client.post("/admin/djqueue/pausedqueue/add/", {"queue": "low"}).status_code == 302
    paused = PausedQueue.objects.get(queue="low")
    assert admin_client.post("/admin/djqueue/pausedqueue/add/", {"queue": "a\x00b"}
                             ).status_code == 200  # refused, with the reason
    admin_client.post("/admin/djqueue/pausedqueue/",
                      {"action": "resume_selected", "_selected_action": [paused.pk]})
    assert not PausedQueue.objects.exists()
    assert list(ControlCommand.objects.order_by("pk").values_list("name", flat=True)) == [
        "reset_rate_limit", "pause_queue", "resume_queue"]
