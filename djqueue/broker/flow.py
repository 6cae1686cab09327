"""Admission of limited messages, in a worker's round (see :mod:`djqueue.worker.rounds`).

A message of a task with a cluster-wide rate limit or a concurrency limit is not started by the
claim: the worker reserves it, and its round asks :func:`admit` which of those it may start. In the
round's transaction, after its acknowledgements (so a finished task frees its place first):

1. the task's :class:`~djqueue.flow.models.FlowGate` row is locked (``SELECT … FOR UPDATE``; on
   SQLite the transaction already holds the write lock), so admissions of one task are serialized
   across every worker;
2. with a concurrency limit, the started messages of each key are counted
   (``djqueue_msg_flow_running``, a partial index only such messages enter), and a key gets at
   most the room it has left;
3. with a cluster-wide rate, one message is admitted when the gate's ``next_start`` has passed on
   the database's clock, and ``next_start`` moves ``1/rate`` on (a token bucket of capacity one,
   as Celery's per-worker one: starts are spaced evenly, at most N in any window of N/rate);
4. the rest go back to ``ready`` with a later ``available_at`` (:meth:`Statements.defer`): no
   worker holds messages it may not start.

The admitted messages are started by the round's own start statement, in the same transaction,
so the count and the gate always agree with what runs. Written with Django's ORM only, so every
vendor runs it as is (row locks where the database has them).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Count, DateTimeField
from django.db.models.expressions import RawSQL

from ..flow.models import FlowGate
from ..models import Message
from .statements import Statements

#: Seconds a message over its key's concurrency limit waits in the table before a worker tries it
#: again.
CONCURRENCY_RETRY = 0.5


@dataclass(frozen=True, slots=True)
class Gate:
    """How a task's starts are limited across the cluster."""

    task_name: str
    rate: float | None = None  # starts per second, for the whole cluster
    concurrency: int | None = None  # running at once, per concurrency key


def admit(broker: Statements, gated: Mapping[Gate, Sequence[int]], owner: int | None) -> list[int]:
    """Of the reserved messages ``gated`` (ids in the order to start them, by gate), the ids this
    round may start; the others are deferred. Runs inside the round's transaction."""
    admitted: list[int] = []
    for gate in sorted(gated, key=lambda g: g.task_name):  # one order: no deadlock between rounds
        admitted.extend(_admit(broker, gate, list(gated[gate]), owner))
    return admitted


def _locked(broker: Statements, task_name: str) -> tuple[datetime.datetime | None,
                                                        datetime.datetime]:
    """Lock the gate of ``task_name`` (made on first use); its next start, and now on the clock
    that starts are stamped with (:meth:`Statements.now_sql`: the database's where it can)."""
    using = broker.using
    now = RawSQL(*broker.now_sql(), output_field=DateTimeField())
    rows = (FlowGate.objects.using(using).select_for_update().filter(task_name=task_name)
            .annotate(now=now).values_list("next_start", "now"))
    row = rows.first()
    if row is None:
        try:
            with transaction.atomic(using=using):  # a savepoint: another worker may be first
                FlowGate.objects.using(using).create(task_name=task_name)
        except IntegrityError:
            pass
        row = rows.first()
    assert row is not None
    return row


def _admit(broker: Statements, gate: Gate, ids: list[int], owner: int | None) -> list[int]:
    using = broker.using
    next_start, now = _locked(broker, gate.task_name)
    admitted = ids
    if gate.concurrency:
        admitted, over = _within_concurrency(using, gate, ids)
        broker.defer(over, CONCURRENCY_RETRY, owner)
    if gate.rate and admitted:
        if next_start is None or next_start <= now:
            interval = datetime.timedelta(seconds=1.0 / gate.rate)
            FlowGate.objects.using(using).filter(task_name=gate.task_name).update(
                next_start=now + interval)
            admitted, later, wait = admitted[:1], admitted[1:], interval.total_seconds()
        else:
            admitted, later, wait = [], admitted, (next_start - now).total_seconds()
        broker.defer(later, wait, owner)
    return admitted


def _within_concurrency(using: str, gate: Gate, ids: list[int]) -> tuple[list[int], list[int]]:
    """``ids`` split into those their key has room for, and the others."""
    messages = Message.objects.using(using)
    keys = dict(messages.filter(id__in=ids).values_list("id", "flow_key"))
    wanted = {key or "" for key in keys.values()}
    running = dict(messages.filter(task_name=gate.task_name, flow_key__in=wanted, state="started")
                   .values("flow_key").annotate(n=Count("id")).values_list("flow_key", "n"))
    room = {key: gate.concurrency - running.get(key, 0) for key in wanted}  # type: ignore[operator]
    within, over = [], []
    for message_id in ids:
        if message_id not in keys:
            continue  # no longer in the table: nothing to start or defer
        key = keys[message_id] or ""
        if room[key] > 0:
            room[key] -= 1
            within.append(message_id)
        else:
            over.append(message_id)
    # Sent by name from where the task is unknown: the task's own key, so the count sees it.
    unkeyed = [message_id for message_id in within if keys[message_id] is None]
    if unkeyed:
        messages.filter(id__in=unkeyed).update(flow_key="")
    return within, over
