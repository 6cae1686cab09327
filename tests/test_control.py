"""Remote control and inspection (``app.control``) against real worker processes."""

from __future__ import annotations

import time

import pytest

from djqueue import states
from djqueue.client.base import app
from djqueue.client.control import parse_rate
from djqueue.exceptions import DjqueueError
from djqueue.models import ControlCommand, RateLimitOverride
from example_project.demo.tasks import record, sleep
from tasks import add

from .conftest import wait_until

TIMEOUT = 5.0  # the sender stops waiting as soon as every live worker replied


@pytest.mark.parametrize(("text", "per_second"), [
    ("10/s", 10.0), ("60/m", 1.0), ("3600/h", 1.0), ("5", 5.0), (2.5, 2.5), ("0", 0.0),
    (None, 0.0), ("", 0.0), ("1.5 / m", 0.025),
])
def test_parse_rate(text, per_second) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["fast", "10/d", "/m", "-1", "10/m/s", -3])
def test_parse_rate_refuses_bad_strings(text) -> None:
    with pytest.raises(ValueError, match="Invalid rate limit"):
        parse_rate(text)


def test_inspect_a_real_worker(start_worker) -> None:
    worker = start_worker("-c", "1", "-n", "alpha@test")
    assert app.control.ping(timeout=TIMEOUT) == [{"alpha@test": {"ok": "pong"}}]
    inspect = app.control.inspect(timeout=TIMEOUT)
    running = sleep.delay(30, "done")  # terminated below
    waiting = add.delay(1, 2)
    later = add.apply_async((5, 5), countdown=60)
    worker.wait_for(f"Received task: tasks.add[{waiting.id}]")
    wait_until(lambda: running.state == states.PENDING and
               [t["id"] for t in inspect.active()["alpha@test"]] == [running.id], what="active")

    [active] = inspect.active()["alpha@test"]
    # Celery 5's shapes: args and kwargs as the task gets them, the process running it.
    stats = inspect.stats()["alpha@test"]
    assert active == {
        "id": running.id, "name": "example_project.demo.tasks.sleep", "args": [30, "done"],
        "kwargs": {}, "type": "example_project.demo.tasks.sleep", "hostname": "alpha@test",
        "time_start": active["time_start"], "acknowledged": False,
        "worker_pid": stats["pool"]["processes"][0],
        "delivery_info": {"exchange": "", "routing_key": "celery", "priority": 0,
                          "redelivered": False}}
    assert abs(active["time_start"] - time.time()) < 60
    [buffered] = inspect.reserved()["alpha@test"]
    assert buffered["id"] == waiting.id and buffered["args"] == [1, 2]
    assert buffered["time_start"] is buffered["worker_pid"] is None
    [entry] = inspect.scheduled()["alpha@test"]
    assert entry["request"]["id"] == later.id and entry["request"]["args"] == [5, 5]
    assert inspect.query_task(running.id, waiting.id, "unknown") == {"alpha@test": {
        running.id: ["active", active],
        waiting.id: ["reserved", buffered],
    }}
    assert {"tasks.add", "example_project.demo.tasks.sleep"} <= set(inspect.registered()["alpha@test"])
    assert "tasks.add [name=tasks.add]" in inspect.registered("name")["alpha@test"]
    assert "error" in inspect.registered("name; rm")["alpha@test"]
    pool = stats["pool"]
    assert (pool["implementation"], pool["max-concurrency"], pool["max-tasks-per-child"]) == (
        "prefork", 1, "N/A")
    assert len(pool["processes"]) == 1 and pool["processes"][0] != worker.pid
    assert stats["pid"] == worker.pid and stats["queues"] == ["celery"]
    # Celery's "total": tasks accepted by name, counted when they start (the reserved one is not).
    assert stats["total"] == {"example_project.demo.tasks.sleep": 1}
    assert int(stats["clock"]) >= 1 and stats["rusage"]["ru_utime"] > 0
    [queue] = inspect.active_queues()["alpha@test"]
    assert (queue["name"], queue["routing_key"], queue["exchange"]["name"]) == ("celery",) * 3
    assert queue["durable"] is True and queue["exclusive"] is False
    clock = inspect.clock()["alpha@test"]["clock"]
    assert clock == ControlCommand.objects.latest("id").id  # the command that asked
    assert inspect.report()["alpha@test"]["ok"].startswith("software -> djqueue:")
    assert inspect.conf()["alpha@test"]["CELERY_RESULT_BACKEND"] == "database"
    assert inspect.ping() == {"alpha@test": {"ok": "pong"}}
    # Another node name gets no answer; the command is not for this worker.
    assert app.control.inspect(destination="beta@test", timeout=0.3).ping() is None

    replies = app.control.revoke(running.id, terminate=True, reply=True, timeout=TIMEOUT)
    assert replies == [{"alpha@test": {"ok": f"tasks {running.id} flagged as revoked"}}]
    wait_until(lambda: running.state == states.REVOKED, what="terminated")
    assert running.id in inspect.revoked()["alpha@test"]
    assert waiting.get(timeout=10) == 3
    assert inspect.stats()["alpha@test"]["total"] == {
        "example_project.demo.tasks.sleep": 1, "tasks.add": 1}


def test_a_worker_shows_the_shadow_name_of_a_call(start_worker) -> None:
    """As Celery's worker: a call's shadow name in its log lines, in inspect's "name" (its
    "type" stays the task's) and in stats' "total"."""
    dropped = add.apply_async((2, 2), shadow="skipped")
    app.control.revoke(dropped.id)  # before any worker: discarded when claimed
    worker = start_worker("-c", "1", "-n", "alpha@test")
    inspect = app.control.inspect(timeout=TIMEOUT)
    running = sleep.apply_async((30, "done"), shadow="napping")  # terminated below
    waiting = add.apply_async((1, 2), shadow="adding")
    failing = add.apply_async((1, "x"), shadow="bad adding")  # TypeError in the task
    worker.wait_for(f"Received task: bad adding[{failing.id}]")
    wait_until(lambda: [t["id"] for t in inspect.active()["alpha@test"]] == [running.id],
               what="active")
    [active] = inspect.active()["alpha@test"]
    assert (active["name"], active["type"]) == ("napping", "example_project.demo.tasks.sleep")
    reserved = {t["id"]: (t["name"], t["type"]) for t in inspect.reserved()["alpha@test"]}
    assert reserved == {waiting.id: ("adding", "tasks.add"), failing.id: ("bad adding", "tasks.add")}
    assert inspect.query_task(running.id)["alpha@test"][running.id][1]["name"] == "napping"

    app.control.revoke(running.id, terminate=True)
    assert waiting.get(timeout=10) == 3
    assert isinstance(failing.get(timeout=10, propagate=False), TypeError)
    log = worker.log()
    assert f"Discarding revoked task: skipped[{dropped.id}]" in log
    assert f"Received task: napping[{running.id}]" in log
    assert f"Terminating napping[{running.id}] (SIGTERM)" in log
    assert f"Task adding[{waiting.id}] succeeded in" in log
    assert f"Task bad adding[{failing.id}] raised unexpected: TypeError(" in log
    assert inspect.stats()["alpha@test"]["total"] == {"napping": 1, "adding": 1, "bad adding": 1}


def test_control_a_real_worker(start_worker, record_file) -> None:
    worker = start_worker("-c", "1", "-n", "alpha@test")
    control = app.control

    def reply(name: str, *args, **kwargs):
        [answer] = getattr(control, name)(*args, destination="alpha@test", reply=True,
                                          timeout=TIMEOUT, **kwargs)
        return answer["alpha@test"]

    # Rate limits: bad input is an error reply and stores nothing; a good one applies and persists.
    assert "Invalid rate limit 'often'" in reply("rate_limit", "tasks.add", "often")["error"]
    assert reply("rate_limit", "no.such.task", "1/s") == {"error": "unknown task 'no.such.task'"}
    assert not RateLimitOverride.objects.exists()
    assert reply("rate_limit", "tasks.add", "10/m") == {"ok": "new rate limit set successfully"}
    assert RateLimitOverride.objects.get().rate_limit == "10/m"
    assert control.inspect(timeout=TIMEOUT).stats()["alpha@test"]["rate_limits"] == {"tasks.add": "10/m"}
    beta = start_worker("-c", "1", "-n", "beta@test")  # started later: uses the stored change
    assert control.inspect("beta@test", TIMEOUT).stats()["beta@test"]["rate_limits"] == {
        "tasks.add": "10/m"}
    control.shutdown(destination="beta@test")
    beta.wait(timeout=15)

    # Time limits apply to the next task of that type.
    assert reply("time_limit", "example_project.demo.tasks.sleep", hard=0.5) == {
        "ok": "time limits set successfully"}
    cut = sleep.delay(5)
    wait_until(lambda: cut.state == states.FAILURE, what="hard time limit")

    # Queues.
    assert reply("add_consumer", "extra") == {"ok": "add consumer extra"}
    assert record.apply_async(("extra",), queue="extra").get(timeout=10) == "extra"
    assert reply("cancel_consumer", "extra") == {"ok": "no longer consuming from extra"}
    assert reply("cancel_consumer", "extra") == {"error": "not consuming from 'extra'"}

    with pytest.raises(DjqueueError, match="Unknown control command 'explode'"):
        control.broadcast("explode")
    assert reply("shutdown") == {"ok": "shutting down"}
    assert worker.wait(timeout=15) == 0
    assert "Got shutdown from remote" in worker.log()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_pool_grow_and_shrink(start_worker, pool: str) -> None:
    start_worker("-P", pool, "-c", "1", "-n", "alpha@test")
    inspect = app.control.inspect(timeout=TIMEOUT)
    assert app.control.pool_grow(2, reply=True, timeout=TIMEOUT) == [
        {"alpha@test": {"ok": "pool will grow (to 3)"}}]
    results = [sleep.delay(1, i) for i in range(3)]
    wait_until(lambda: len((inspect.active() or {}).get("alpha@test", [])) == 3, what="3 at once")
    assert app.control.pool_shrink(2, reply=True, timeout=TIMEOUT) == [
        {"alpha@test": {"ok": "pool will shrink (to 1)"}}]
    assert [r.get(timeout=10) for r in results] == [0, 1, 2]
    assert inspect.stats()["alpha@test"]["pool"]["max-concurrency"] == 1
    more = [sleep.delay(0.3, i) for i in range(3)]
    seen = set()
    while not all(r.ready() for r in more):
        seen.add(len((inspect.active() or {}).get("alpha@test", [])))
    assert max(seen) <= 1
    assert app.control.pool_shrink(reply=True, timeout=TIMEOUT) == [
        {"alpha@test": {"error": "cannot shrink the pool below 1 (it has 1)"}}]


def test_solo_pool_cannot_be_resized(start_worker) -> None:
    start_worker("-P", "solo", "-n", "alpha@test")
    assert app.control.pool_grow(reply=True, timeout=TIMEOUT) == [
        {"alpha@test": {"error": "the solo pool cannot be resized"}}]


def test_replies_need_a_committed_command(transactional_db) -> None:
    from django.db import transaction

    with transaction.atomic(), pytest.raises(DjqueueError, match="inside a transaction"):
        app.control.ping()
    assert app.control.ping(timeout=0.2) == []  # no worker: no reply, no error
    assert ControlCommand.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_worker_side_errors_and_cleanup() -> None:
    """In-process: commands this worker cannot run get error replies; old rows are deleted."""
    import datetime
    import time

    from django.utils import timezone

    from djqueue.models import ControlReply
    from djqueue.worker.loop import Worker

    worker = Worker(app, pool="solo", poll_interval=0, hostname="solo@test")
    worker.start()
    long_ago = timezone.now() - datetime.timedelta(hours=1)
    old = ControlCommand.objects.create(name="ping", expires_at=long_ago)
    ControlReply.objects.create(command_id=old.pk, hostname="gone@test", data={"ok": "pong"})
    ControlReply.objects.update(created_at=long_ago)
    soon = timezone.now() + datetime.timedelta(seconds=30)
    unknown = ControlCommand.objects.create(name="explode", reply=True, expires_at=soon)
    bad = ControlCommand.objects.create(name="pool_grow", arguments={"size": 2}, reply=True,
                                        expires_at=soon)
    other = ControlCommand.objects.create(name="ping", destination=["else@test"], reply=True,
                                          expires_at=soon)
    worker._control._next_poll = 0.0  # both due now
    worker._control._next_cleanup = time.monotonic()
    worker.loop()
    replies = {r.command_id: r.data for r in ControlReply.objects.all()}
    assert replies == {
        unknown.pk: {"error": "unknown control command 'explode'"},
        bad.pk: {"error": "bad arguments for pool_grow: got an unexpected keyword argument 'size'"},
    }
    assert other.pk not in replies
    assert set(ControlCommand.objects.values_list("pk", flat=True)) == {unknown.pk, bad.pk, other.pk}
    worker._control._next_poll = 0.0
    worker.loop()  # handled commands are not run twice
    assert ControlReply.objects.count() == 2
