"""The broker's rows as Python sees them, alike on every database: a message to write
(:class:`NewMessage`, :class:`MessageHead`, and the columns a new row fills, :func:`row_plan`), a
claim to make (:class:`ClaimRequest`, :class:`StartNow`) and what it took (:class:`Claimed`), a
message recovery set aside (:class:`Lost`), and results as the JSON document of rows a results
upsert reads (:func:`results_document`). No SQL of any vendor here: that is in the vendor modules
(:mod:`djqueue.broker.postgresql`, :mod:`djqueue.broker.sqlite`).
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from ..models import ChainSegment, Chord, Message, Revocation, TaskResult

if TYPE_CHECKING:
    from ..backends.base import ResultRecord

TABLE = Message._meta.db_table
REVOKED_TABLE = Revocation._meta.db_table
RESULTS_TABLE = TaskResult._meta.db_table
CHORD_TABLE = Chord._meta.db_table
CHAIN_SEGMENT_TABLE = ChainSegment._meta.db_table


# Publishing.


class MessageHead(NamedTuple):
    """The columns a message shares with the other calls of its batch made the same way: a
    ``group`` of one task builds this once (see :class:`djqueue.client.base.Batch`)."""

    task_name: str
    queue: str
    priority: int
    available_at: datetime.datetime
    expires: datetime.datetime | None
    content_type: str
    time_limit: float | None
    soft_time_limit: float | None
    #: The concurrency key of a task with a concurrency limit ("" for the task as a whole).
    flow_key: str | None = None


class NewMessage(NamedTuple):
    """A message row not yet written: its own id and encoded arguments, and its head."""

    task_id: str
    body: str
    head: MessageHead


@dataclass(frozen=True, slots=True)
class RowPlan:
    """How rows are written. The columns are those :class:`NewMessage` gives, then the publishing
    time for ``auto_now`` fields, then every other field of :class:`Message` at its default, so
    a new field with a constant default needs no edit here (a callable default would give a
    whole batch one value, so :func:`row_plan` refuses it)."""

    columns: tuple[str, ...]
    stamped: int  # how many columns take the time of publishing
    constants: tuple[Any, ...]
    is_time: tuple[bool, ...]  # per column: a datetime, which SQLite wants adapted


@functools.cache
def row_plan() -> RowPlan:
    given = ("task_id", "body", *MessageHead._fields)
    fields = {f.attname: f for f in Message._meta.concrete_fields if not f.primary_key}
    rest = [f for name, f in fields.items() if name not in given]
    stamped = [f for f in rest if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    plain = [f for f in rest if f not in stamped]
    for field in plain:
        if field.has_default() and callable(field.default):
            raise TypeError(f"Message.{field.name} has a callable default: give it a value per "
                            "message in NewMessage instead")
    ordered = [fields[name] for name in given] + stamped + plain
    return RowPlan(
        columns=tuple(f.column for f in ordered),
        stamped=len(stamped),
        constants=tuple(f.get_default() for f in plain),
        is_time=tuple(isinstance(f, models.DateTimeField) for f in ordered),
    )


def row_tail(head: MessageHead, now: datetime.datetime) -> tuple[Any, ...]:
    """A row's columns after the task id and the body."""
    plan = row_plan()
    return (*head, *(now,) * plan.stamped, *plan.constants)


def adapted(values: tuple[Any, ...], connection: BaseDatabaseWrapper) -> tuple[Any, ...]:
    """A row's last columns (``values``) with their datetimes as the database's Django backend
    writes them (text on SQLite, naive UTC on MySQL), for statements run past the ORM."""
    adapt = connection.ops.adapt_datetimefield_value
    is_time = row_plan().is_time[-len(values):]
    return tuple(adapt(value) if time else value for value, time in zip(values, is_time))


@functools.cache
def insert_sql(if_present: str = "ON CONFLICT (task_id) DO NOTHING") -> str:
    """One message's ``INSERT``, its values in the order of :func:`row_plan`. A task id that is
    already in the table is not written again (the same id sent twice is one message):
    ``if_present`` says so in the vendor's words (PostgreSQL's and SQLite's by default)."""
    columns = row_plan().columns
    values = ", ".join(["%s"] * len(columns))
    return f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES ({values}) {if_present}"


class ChordRow(NamedTuple):
    """A chord's counter row not yet written (see :mod:`djqueue.workflow.models`): its id,
    members pending, its body (JSON) and its members' task ids (JSON)."""

    id: str
    pending: int
    body: str
    members: str


class SegmentRow(NamedTuple):
    """A long chain's segment not yet written (:class:`djqueue.workflow.models.ChainSegment`):
    its id and its steps, encoded."""

    id: str
    content_type: str
    steps: str


@dataclass(slots=True)
class FlowRows:
    """What a round that is one statement writes for the workflows of the tasks it settles
    (:mod:`djqueue.worker.workflow`), each row only if the message of the task it follows (its
    parent's task id) is still held by the worker: messages to publish, those marked in
    ``start`` written as started by this worker (the pool has room for them) unless an older
    message of their queue and at least their priority waits, chords' members finished, as
    ``(parent, chord id, ChordError text or "")``, and ``(parent, its children's record)``
    (``AsyncResult.children``)."""

    parents: list[str]
    messages: list[NewMessage]
    start: list[bool]
    acks_late: list[bool]
    members: list[tuple[str, str, str]]
    children: list[tuple[str, ResultRecord]]


# Claiming.


@dataclass(slots=True)
class StartNow:
    """Which claimed messages the claim marks started at once, because the pool takes them
    straight away: among the first ``idle`` (in claim order), those of ``names``; among the first
    ``idle + queued``, those of ``short_names`` (tasks short enough to queue behind others).
    ``acks_late_names`` are recorded as such."""

    idle: int
    names: Sequence[str]
    queued: int
    short_names: Sequence[str]
    acks_late_names: Sequence[str]

    def __bool__(self) -> bool:
        return bool((self.idle and self.names) or (self.idle + self.queued and self.short_names))


@dataclass(slots=True)
class ClaimRequest:
    """What to claim in a round: up to ``limit`` messages from ``queues``, some of them marked
    started at once (``start``)."""

    queues: Sequence[str]
    limit: int
    worker: str
    lease_seconds: float
    start: StartNow | None = None


@dataclass(slots=True)
class Claimed:
    """A message this worker now holds."""

    id: int
    task_id: str
    task_name: str
    queue: str
    priority: int
    content_type: str
    body: str
    retries: int
    deliveries: int  # starts of this attempt so far, this claim's included
    time_limit: float | None
    soft_time_limit: float | None
    expired: bool
    revoked: bool
    started: bool = False  # marked started by the claim itself (see StartNow)
    #: Why its text could not be read (SQLite: not valid UTF-8); the claim set it aside.
    unreadable: str = ""
    #: The name the worker shows for it: its call's ``shadow`` name, else its task's (set by the
    #: worker when it receives it).
    shown_name: str = ""


#: How many columns a claimed row has: the fields of :class:`Claimed` up to ``started``.
CLAIMED_COLUMNS = 14


def claimed_from_rows(rows: Sequence[Sequence[object]]) -> list[Claimed]:
    """Claimed messages from the rows of a claim, in the order to start them (RETURNING gives
    no order)."""
    claimed = [Claimed(*row[:11], expired=bool(row[11]), revoked=bool(row[12]),  # type: ignore[arg-type]
                       started=bool(row[13])) for row in rows]
    claimed.sort(key=lambda m: (-m.priority, m.id))
    return claimed


# Recovery.

#: What a message that was lost with its worker becomes when it is not given back.
LOST_ERROR = "WorkerLostError: its worker stopped sending heartbeats while it ran"
#: The same for an ``acks_late`` message, followed by how many times it was started.
LOST_ERROR_REPEATED = "WorkerLostError: its worker was lost while it ran, each of the "


@dataclass(frozen=True, slots=True)
class Lost:
    """A started message set aside because its worker was lost (see
    :meth:`djqueue.broker.base.Operations.recover_expired_leases`)."""

    task_id: str
    task_name: str
    worker: str
    queue: str
    acks_late: bool
    deliveries: int
    content_type: str = ""
    body: str = ""  # what follows it in a workflow is read from it (djqueue.worker.workflow)


# Results.

#: The result columns a store writes, besides the task id (which it matches on).
RESULT_UPDATED = [
    "state", "task_name", "content_type", "result", "traceback", "args", "kwargs",
    "worker", "runtime", "date_done", "queue", "workers",
]
#: The columns of a row in the JSON document, in this order (see :func:`results_document`).
RESULT_COLUMNS = ["task_id", *RESULT_UPDATED]
_DONE = RESULT_COLUMNS.index("date_done")


def without_nul(value: object) -> object:
    """``value`` with any NUL character replaced by U+FFFD. PostgreSQL's text cannot hold NUL,
    so one in a traceback (an exception's message may carry any character) failed the worker's
    whole round; SQLite's JSON functions cut the text there. An encoded result never has one:
    serializers give ASCII JSON or base64."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def results_document(
    records: Sequence[ResultRecord], as_text: Callable[[datetime.datetime], object]
) -> str:
    """``records`` as one JSON document, a list per row in the order of :data:`RESULT_COLUMNS`
    (as messages are when published), so a batch costs one statement and no model instances.
    ``as_text`` writes a ``date_done`` the way the database reads it. The last record for an id
    wins (STARTED then SUCCESS in one batch)."""
    latest = {record.task_id: record for record in records}
    done_texts: dict[datetime.datetime, object] = {}  # a round's records share their time
    rows = []
    for record in latest.values():
        row = [getattr(record, column) for column in RESULT_COLUMNS]
        done = row[_DONE]
        if done is not None:
            row[_DONE] = done_texts.get(done) or done_texts.setdefault(done, as_text(done))
        rows.append(row)
    document = json.dumps(rows, separators=(",", ":"))
    if "\\u0000" in document:  # rare: look at the values only then
        rows = [[without_nul(value) for value in row] for row in rows]
        document = json.dumps(rows, separators=(",", ":"))
    return document
