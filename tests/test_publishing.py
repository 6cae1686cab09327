"""The enqueue paths against the real database: one message (a prepared INSERT on PostgreSQL),
a group (COPY + NOTIFY on PostgreSQL, executemany on SQLite), their transactions and NOTIFY."""

from __future__ import annotations

import contextlib
import datetime
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from djqueue import group
from djqueue.client.base import app
from djqueue.canvas import signature
from djqueue.exceptions import EncodeError, InvalidIdentifier
from djqueue.models import Message, Revocation
from djqueue.client.revocation import revoke
from djqueue.client.publishing import new_task_ids
from djqueue.broker.postgresql import COPY_CHUNK, NOTIFY_CHANNEL, PREPARE_AFTER
from djqueue.serialization import dumps, loads
from tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="NOTIFY and prepared statements are PostgreSQL's"
)


@pytest.fixture
def listener() -> Iterator[psycopg.Connection]:
    """Another session that LISTENs on djqueue's channel, as a worker does."""
    settings = connection.settings_dict
    other = psycopg.connect(
        dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432, password=settings["PASSWORD"] or None, autocommit=True,
    )
    other.execute(f"LISTEN {NOTIFY_CHANNEL}")
    yield other
    other.close()


def notified(listener: psycopg.Connection) -> set[str]:
    return {note.payload for note in listener.notifies(timeout=0.5, stop_after=10)}


def test_new_task_ids_are_distinct_version_4_uuids() -> None:
    ids = new_task_ids(1000)
    assert len(set(ids)) == 1000
    for text in ids[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.fixture
def refused_task_id() -> Iterator[str]:
    """A task id the database refuses a row with (a CHECK constraint, a trigger on SQLite)."""
    refused = "refused-id"
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON djqueue_message "
                f"WHEN NEW.task_id = '{refused}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        else:
            cursor.execute("ALTER TABLE djqueue_message ADD CONSTRAINT refuse "
                           f"CHECK (task_id <> '{refused}')")
    yield refused
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DROP TRIGGER refuse")
        else:
            cursor.execute("ALTER TABLE djqueue_message DROP CONSTRAINT refuse")


def test_group_outside_a_transaction_commits_as_a_whole(refused_task_id: str) -> None:
    with pytest.raises(DatabaseError):
        group(add.s(1, 1), add.s(2, 2).set(task_id=refused_task_id)).apply_async()
    assert not Message.objects.exists()
    assert connection.get_autocommit()  # the batch's own transaction is over
    result = group(add.s(i, i) for i in range(50)).apply_async()
    assert Message.objects.count() == 50
    assert {r.id for r in result} == set(Message.objects.values_list("task_id", flat=True))


def test_group_inside_atomic_commits_and_rolls_back_with_the_caller() -> None:
    with transaction.atomic():
        kept = group(add.s(i, i) for i in range(30)).apply_async()
        with pytest.raises(RuntimeError), transaction.atomic():
            group(add.s(i, i) for i in range(20)).apply_async()
            raise RuntimeError("roll back the inner block only")
    assert sorted(Message.objects.values_list("task_id", flat=True)) == sorted(r.id for r in kept)


def test_group_rows_keep_every_column_and_character() -> None:
    text = "tab\there, new\nline, back\\slash, quote\" and é"
    before = datetime.datetime.now(datetime.timezone.utc)
    result = group(
        add.s(text, y=[1.5, None]),
        add.s(1, 2).set(queue="other\tqueue", priority=7, countdown=60, task_id="own\\id\t1"),
        add.s(3, 4).set(time_limit=2.5, soft_time_limit=1, expires=30),
        add.s(b"\\\t\x00", 5).set(serializer="pickle"),
    ).apply_async()
    rows = {m.task_id: m for m in Message.objects.order_by("id")}
    assert list(rows) == [r.id for r in result] and rows.get("own\\id\t1") is not None
    first, second, third, pickled = (rows[r.id] for r in result)
    assert loads(pickled.body, pickled.content_type, ["pickle"])["args"] == [b"\\\t\x00", 5]
    assert first.body == dumps({"args": [text], "kwargs": {"y": [1.5, None]}})[1]
    assert loads(first.body, first.content_type, ["json"])["args"] == [text]
    assert (first.queue, first.priority, first.state, first.retries) == ("celery", 0, "ready", 0)
    assert first.expires is None and first.time_limit is None and first.owner is None
    assert first.created_at >= first.available_at >= before
    assert (second.queue, second.priority) == ("other\tqueue", 7)
    assert second.available_at - first.available_at == datetime.timedelta(seconds=60)
    assert (third.time_limit, third.soft_time_limit) == (2.5, 1.0)
    assert third.expires - third.available_at == datetime.timedelta(seconds=30)


def test_unserialisable_argument_in_a_group_inserts_nothing() -> None:
    with pytest.raises(EncodeError):
        group(add.s(1, 1), add.s(object(), 1)).apply_async()
    assert not Message.objects.exists()


def test_a_bad_argument_after_rows_were_sent_inserts_nothing() -> None:
    """Rows of a group are encoded while they are written: an argument that cannot be encoded,
    after whole chunks have gone to the database, still fails the group as a whole, with the
    encoding error, and the connection stays usable (in the caller's transaction too)."""
    calls = [add.s(i, i) for i in range(2 * COPY_CHUNK + 10)] + [add.s(object(), 1)]
    with pytest.raises(EncodeError):
        group(calls).apply_async()
    assert not Message.objects.exists()
    with transaction.atomic():
        add.delay(1, 2)
        with pytest.raises(EncodeError), transaction.atomic():
            group(calls).apply_async()
    assert Message.objects.count() == 1


def test_names_and_ids_the_tables_cannot_hold_are_refused_alike() -> None:
    """A NUL character, or a task id, task name or queue name longer than its column: PostgreSQL
    refused them (each its own way), SQLite stored them. Now both refuse them alike, before any
    SQL; a group's rows are built while they are sent on PostgreSQL (a COPY, rolled back)."""
    nul_route = override_settings(CELERY_ROUTES={"tasks.add": {"queue": "q\x00"}})
    single = [
        ("task name", lambda: app.send_task("tasks.a\x00dd", (1, 1))),
        ("task name", lambda: app.send_task("t" * 256)),
        ("task name", lambda: signature("tasks.a\x00dd").delay(1, 1)),
        ("queue name", lambda: add.apply_async((1, 1), queue="q\x00")),
        ("queue name", lambda: add.apply_async((1, 1), queue="q" * 201)),
        ("queue name", nul_route(lambda: add.delay(1, 1))),
        ("task id", lambda: add.apply_async((1, 1), task_id="i" * 256)),
        ("task id", lambda: app.send_task("tasks.add", task_id="i\x00")),
        ("task id", lambda: app.control.revoke("i" * 256)),
        ("task id", lambda: revoke(["ok", "i\x00"])),
    ]
    groups = [
        ("task id", lambda: group(add.s(1, 1), add.s(2, 2).set(task_id="i" * 256)).delay()),
        ("task name", lambda: group(signature("t\x00", (i,)) for i in range(3)).delay()),
        ("queue name", nul_route(lambda: group(add.s(i, i) for i in range(3)).delay())),
    ]
    with CaptureQueriesContext(connection) as queries:
        for what, call in single + (groups if connection.vendor == "sqlite" else []):
            with pytest.raises(InvalidIdentifier, match=what):
                call()
    assert [q["sql"] for q in queries.captured_queries] == []
    for what, call in groups:
        with pytest.raises(InvalidIdentifier, match=what):
            call()
    assert not Message.objects.exists() and not Revocation.objects.exists()
    add.apply_async((1, 1), queue="q" * 200, task_id="i" * 255)  # as long as the columns allow
    assert Message.objects.get().task_id == "i" * 255


def test_routing_by_a_function_is_asked_for_every_call_of_a_group() -> None:
    def by_argument(name, args, kwargs):
        return {"queue": f"q{args[0] % 2}"}

    with override_settings(CELERY_ROUTES=[by_argument]):
        group(add.s(i, i) for i in range(4)).apply_async()
    assert sorted(Message.objects.values_list("queue", flat=True)) == ["q0", "q0", "q1", "q1"]


def test_one_message_goes_through_execute_wrappers() -> None:
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql.split()[0])
        return execute(sql, params, many, context)

    connection.ensure_connection()  # MySQL's session settings go through the wrappers too
    with connection.execute_wrapper(wrapper):
        add.delay(1, 1)
    assert seen == ["WITH" if connection.vendor == "postgresql" else "INSERT"]
    assert Message.objects.count() == 1


@postgresql_only
def test_notify_is_delivered_at_commit_and_dropped_on_rollback(listener) -> None:
    with transaction.atomic():
        add.delay(1, 1)
        group(add.s(1, 1).set(queue="second"), add.s(2, 2)).apply_async()
        assert notified(listener) == set()  # nothing before the commit
    assert notified(listener) == {"celery", "second"}
    with pytest.raises(RuntimeError), transaction.atomic():
        group(add.s(i, i).set(queue="dropped") for i in range(5)).apply_async()
        add.apply_async((1, 1), queue="dropped")
        raise RuntimeError("roll back")
    assert notified(listener) == set()
    group(add.s(i, i).set(queue="autocommit") for i in range(5)).apply_async()
    add.apply_async((1, 1), queue="single")
    assert notified(listener) == {"autocommit", "single"}


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@postgresql_only
def test_one_message_is_a_prepared_statement_unless_a_pooler_is_declared() -> None:
    connection.close()  # a new session: psycopg counts runs per connection
    for i in range(PREPARE_AFTER):
        add.delay(i, i)
    assert prepared_statements() == []  # a connection that sends a few pays no extra round trip
    add.delay(5, 5)
    assert any("INSERT INTO djqueue_message" in sql for sql in prepared_statements())
    with pytest.raises(RuntimeError), transaction.atomic():
        add.delay(6, 6)  # the prepared statement, in the caller's transaction
        raise RuntimeError("roll back")
    assert Message.objects.count() == PREPARE_AFTER + 1
    connection.close()
    connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = True
    try:
        with transaction.atomic():
            for i in range(PREPARE_AFTER + 1):
                add.delay(i, i)
            assert prepared_statements() == []
    finally:
        connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = False
    assert Message.objects.count() == 2 * PREPARE_AFTER + 2


def test_settings_are_read_again_after_a_change() -> None:
    assert app.conf.CELERY_DEFAULT_QUEUE == "celery"
    with override_settings(CELERY_DEFAULT_QUEUE="overridden"):
        assert add.delay(1, 1).id and Message.objects.get().queue == "overridden"
        app.conf.CELERY_DEFAULT_QUEUE = "runtime"
        assert app.conf.CELERY_DEFAULT_QUEUE == "runtime"
        app.conf.reset()
        assert app.conf.CELERY_TASK_DEFAULT_QUEUE == "overridden"
    assert app.conf.CELERY_DEFAULT_QUEUE == "celery"


#: A statement's kind: its first word, or for ``WITH … AS (…)`` the first word inside.
_KIND = re.compile(r"\s*(?:WITH\s.*?\sAS\s*\(\s*)?(\w+)", re.S | re.I)


@contextlib.contextmanager
def statements_run() -> Iterator[Counter[str]]:
    """The statements the server ran for this connection inside the block, by kind (``INSERT``,
    ``SELECT``, ``SAVEPOINT``, ``BEGIN``…), as the database or its client library saw them, not
    Django: on PostgreSQL djqueue's statements bypass Django's cursor unless something (such as
    ``CaptureQueriesContext``) watches it. PostgreSQL: libpq's trace of the protocol (simple
    queries, and the statement of each ``Execute``); SQLite: its trace callback; MySQL and
    MariaDB: the session's ``Com_*`` counters."""
    kinds: Counter[str] = Counter()
    connection.ensure_connection()
    raw = connection.connection
    if connection.vendor == "postgresql":
        with tempfile.TemporaryFile() as trace:
            raw.pgconn.trace(trace.fileno())
            raw.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                yield kinds
            finally:
                raw.pgconn.untrace()
            trace.seek(0)
            with connection.cursor() as cursor:  # those prepared before the block
                cursor.execute("SELECT name, statement FROM pg_prepared_statements")
                parsed = dict(cursor.fetchall())  # statement name -> text
            bound = ""
            for line in trace.read().decode().splitlines():
                sent = re.match(r'F\t\d+\t(Query|Parse|Bind|Execute)\t "([^"]*)"(?: "(.*)")?', line)
                if sent is None:
                    continue
                what, first, second = sent.groups()
                if what == "Query":
                    kinds[_KIND.match(first).group(1).upper()] += 1
                elif what == "Parse":
                    parsed[first] = second
                elif what == "Bind":
                    bound = parsed[second.partition('"')[0]]
                else:
                    kinds[_KIND.match(bound).group(1).upper()] += 1
    elif connection.vendor == "sqlite":
        texts: list[str] = []
        raw.set_trace_callback(texts.append)
        try:
            yield kinds
        finally:
            raw.set_trace_callback(None)
        kinds.update(_KIND.match(text).group(1).upper() for text in texts)
    else:
        def counters() -> dict[str, int]:
            with raw.cursor() as cursor:
                cursor.execute("SHOW SESSION STATUS LIKE 'Com\\_%'")
                return {name: int(value) for name, value in cursor.fetchall()}

        before = counters()
        yield kinds
        for name, value in counters().items():  # Com_set_option: SET, Com_savepoint: SAVEPOINT
            if name != "Com_show_status" and value > before.get(name, 0):
                kinds[name[4:].split("_")[0].upper()] += value - before.get(name, 0)


def test_a_plain_delay_runs_one_insert_and_nothing_else() -> None:
    add.delay(0, 0)  # the session opened, and what a process asks once (a pooler's port)
    calls = 2 * PREPARE_AFTER  # before and after PostgreSQL prepares the statement
    with statements_run() as alone:
        for i in range(calls):
            add.delay(i, i)
    assert alone == Counter(INSERT=calls)
    # In the caller's transaction: the INSERTs and that transaction's own statements only (no
    # savepoint), whatever those are on the vendor (MySQL's SET autocommit, SQLite's BEGIN
    # IMMEDIATE).
    with statements_run() as reference, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    with statements_run() as inside, transaction.atomic():
        for i in range(calls):
            add.delay(i, i)
    assert inside == reference - Counter(SELECT=1) + Counter(INSERT=calls)
    assert Message.objects.count() == 1 + 2 * calls
