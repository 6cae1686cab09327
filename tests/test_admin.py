"""The admin as the monitor, through Django's test client: pages, actions, escaping, permissions."""

from __future__ import annotations

import datetime
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from djqueue import states
from djqueue.client.base import app
from djqueue.backends import ResultRecord
from djqueue.models import ControlCommand, Message, Revocation, TaskResult, WorkerNode
from djqueue.serialization import dumps
from tasks import add

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def admin_client_for():
    """A logged-in staff client holding exactly the given djqueue permissions."""

    def login(*codenames: str) -> Client:
        user = User.objects.create_user(f"staff{User.objects.count()}", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(content_type__app_label="djqueue",
                                                            codename__in=codenames))
        client = Client()
        client.force_login(user)
        return client

    return login


@pytest.fixture
def boss(admin_client: Client) -> Client:
    return admin_client


def url(name: str, *args: object) -> str:
    return reverse(f"admin:djqueue_{name}", args=args)


def failed_result(task_id: str = "failed-1", args: str = "[2, 3]") -> TaskResult:
    content_type, body = dumps({"exc_type": "ValueError", "exc_module": "builtins",
                                "exc_message": [SCRIPT]})
    app.backend.store([ResultRecord(task_id, states.FAILURE, "tasks.add", content_type, body,
                                    f"Traceback (most recent call last):\n  {SCRIPT}\nValueError",
                                    args, "{}", "w@host", 0.5, timezone.now(), "celery")])
    return TaskResult.objects.get(task_id=task_id)


def test_user_data_is_escaped(boss: Client) -> None:
    message = add.delay(SCRIPT, 1)
    failed = failed_result(args=repr([SCRIPT, 1]))
    pages = [url("message_changelist"), url("message_change", Message.objects.get().pk),
             url("taskresult_changelist"), url("taskresult_change", failed.pk),
             url("overview"), url("message_changelist") + f"?task_name={SCRIPT}"]
    for page in pages:
        html = boss.get(page).content.decode()
        assert SCRIPT not in html, page
    detail = boss.get(url("message_change", Message.objects.get().pk)).content.decode()
    assert "args: [&#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;, 1]" in detail
    result_page = boss.get(url("taskresult_change", failed.pk)).content.decode()
    assert "  &lt;script&gt;alert(1)&lt;/script&gt;\nValueError</pre>" in result_page
    assert message.id in boss.get(url("message_changelist")).content.decode()


def test_overview(boss: Client) -> None:
    add.delay(1, 1)
    add.apply_async((1, 1), countdown=600)
    add.apply_async((1, 1), queue="low")
    Message.objects.filter(queue="low").update(available_at=timezone.now() - datetime.timedelta(hours=2))
    WorkerNode.objects.create(hostname="alive@host", pid=1, queues="celery,low", pool="prefork",
                              concurrency=2, heartbeat_at=timezone.now())
    WorkerNode.objects.create(hostname="dead@host", pid=2, queues="celery", pool="prefork",
                              concurrency=2, heartbeat_at=timezone.now() - datetime.timedelta(hours=1))
    failed_result()
    page = boss.get(url("overview"))
    assert page.status_code == 200
    queues = {q.name: q for q in page.context["queues"]}
    assert (queues["celery"].waiting, queues["celery"].scheduled) == (1, 1)
    assert queues["low"].waiting == 1 and queues["low"].oldest_waiting >= datetime.timedelta(hours=2)
    assert queues["low"].workers == ["alive@host"]
    assert [w.hostname for w in page.context["workers"]] == ["alive@host"]
    assert page.context["outcomes"][0] == (5, [("celery", {"FAILURE": 1}),
                                               ("all queues", {"FAILURE": 1})])
    html = page.content.decode()
    assert "alive@host" in html and "dead@host" not in html and "2\xa0hours" in html


def test_lists_never_count_the_whole_table(boss: Client) -> None:
    for i in range(3):
        add.delay(i, i)
    for page in (url("message_changelist"), url("message_changelist") + "?status=waiting&queue=celery",
                 url("taskresult_changelist"), url("workernode_changelist"), url("overview")):
        with CaptureQueriesContext(connection) as queries:
            assert boss.get(page).status_code == 200
        counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
        assert all("LIMIT" in sql.upper() or "date_done" in sql for sql in counts), (page, counts)
        assert not [q["sql"] for q in queries if "SELECT DISTINCT" in q["sql"].upper()], page


def test_message_actions(boss: Client) -> None:
    waiting = add.delay(1, 1)
    held = add.delay(2, 2)
    rejected = add.delay(3, 3)
    Message.objects.filter(task_id=held.id).update(state="reserved", worker="w@host")
    Message.objects.filter(task_id=rejected.id).update(state="rejected", error="NotRegistered")
    ids = {m.task_id: m.pk for m in Message.objects.all()}

    def act(action: str, *task_ids: str) -> None:
        boss.post(url("message_changelist"),
                  {"action": action, "_selected_action": [ids[t] for t in task_ids]})

    offered = boss.get(url("message_changelist")).content.decode()
    assert "purge_selected" in offered and "delete_selected" not in offered  # held ones stay
    act("revoke_selected", waiting.id)
    assert list(Revocation.objects.values_list("task_id", flat=True)) == [waiting.id]
    act("restore_selected", rejected.id, waiting.id)
    assert Message.objects.get(task_id=rejected.id).state == "ready"
    assert Message.objects.get(task_id=rejected.id).error == ""
    act("purge_selected", waiting.id, held.id)
    assert set(Message.objects.values_list("task_id", flat=True)) == {held.id, rejected.id}


def test_result_actions(boss: Client) -> None:
    retryable = failed_result("retry-me", "[2, 3]")
    opaque = failed_result("opaque", "[datetime.datetime(2020, 1, 1, 0, 0)]")
    response = boss.post(url("taskresult_changelist"), {
        "action": "retry_selected", "_selected_action": [retryable.pk, opaque.pk]}, follow=True)
    notes = [str(m) for m in response.context["messages"]]
    assert any("Cannot re-enqueue opaque: its arguments are not plain literals" in n for n in notes)
    [message] = Message.objects.all()
    assert message.task_name == "tasks.add" and json.loads(message.body)["args"] == [2, 3]
    boss.post(url("taskresult_changelist"), {"action": "forget_selected",
                                             "_selected_action": [retryable.pk]})
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["opaque"]


def test_worker_list_and_shutdown(boss: Client) -> None:
    node = WorkerNode.objects.create(
        hostname="w1@host", pid=7, queues="celery", pool="prefork", concurrency=2,
        heartbeat_at=timezone.now(), active=json.dumps([{"id": "t-1", "name": "tasks.add"}]))
    WorkerNode.objects.create(hostname="old@host", pid=8, queues="celery", pool="solo",
                              concurrency=1, heartbeat_at=timezone.now() - datetime.timedelta(minutes=10))
    alive = boss.get(url("workernode_changelist") + "?status=alive").content.decode()
    assert "w1@host" in alive and "tasks.add[t-1]" in alive and "old@host" not in alive
    lost = boss.get(url("workernode_changelist") + "?status=lost").content.decode()
    assert "old@host" in lost and "w1@host" not in lost
    boss.post(url("workernode_changelist"), {"action": "shutdown_selected",
                                             "_selected_action": [node.pk]})
    command = ControlCommand.objects.get()
    assert (command.name, command.destination) == ("shutdown", ["w1@host"])


def test_permissions(client: Client, admin_client_for) -> None:
    add.delay(1, 1)
    pk = Message.objects.get().pk
    assert client.get(url("overview")).status_code == 302  # anonymous: to the login page
    nobody = admin_client_for()
    for page in (url("message_changelist"), url("overview"), url("taskresult_changelist")):
        assert nobody.get(page).status_code == 403
    viewer = admin_client_for("view_message")
    assert viewer.get(url("overview")).status_code == 200
    page = viewer.get(url("message_changelist"))
    assert page.status_code == 200 and "purge_selected" not in page.content.decode()
    viewer.post(url("message_changelist"), {"action": "purge_selected", "_selected_action": [pk]})
    assert Message.objects.filter(pk=pk).exists()
    # Payloads are read-only, whatever the permissions: no form, no save.
    detail = viewer.get(url("message_change", pk)).content.decode()
    assert 'name="body"' not in detail and 'name="_save"' not in detail
    assert viewer.post(url("message_change", pk), {"body": "x"}).status_code == 403
