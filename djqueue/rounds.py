"""A worker's round: everything it has to tell the database between two waits, sent at once.

Each round stores the results of the tasks that finished and acknowledges their messages, settles
the other outcomes (retries, rejects, messages given back), marks started what is about to be
handed to the pool, and claims more. The worker's cost per task is then a share of one round trip
rather than several round trips of its own.

On PostgreSQL the common round (results in the database backend, acknowledgements, starts and a
claim) is a single statement: the writes are data-modifying ``WITH`` queries and the claim is the
main query, so the round is one implicit transaction with one commit. Any other round is one
transaction of a few statements; on SQLite statements cost no network round trip, only the commit
counts.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import connections, transaction

from django.utils import timezone

from . import broker, claiming, states
from .backends import ResultBackend, ResultRecord
from .backends.database import DatabaseBackend
from .execution import Outcome
from .sql import execute as sql_execute


@dataclass(slots=True)
class ClaimRequest:
    """What to claim in a round: up to ``limit`` messages from ``queues``, some of them marked
    started at once (``start``)."""

    queues: Sequence[str]
    limit: int
    worker: str
    lease_seconds: float
    start: claiming.StartNow | None = None


@dataclass(slots=True)
class Round:
    """The writes of one round. Message ids are those the worker holds (its ``owner`` id)."""

    records: list[ResultRecord] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    #: Held messages to give back to the queue (acks_late tasks cut short, reserved messages at
    #: shutdown, jobs a dead pool process never began).
    releases: list[int] = field(default_factory=list)
    rejects: list[tuple[int, str]] = field(default_factory=list)
    retries: list[tuple[int, datetime.datetime, str | None]] = field(default_factory=list)
    #: Rate-limited messages: ``(seconds to wait, ids)``.
    defers: list[tuple[float, list[int]]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    acks_late: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.records or self.acks or self.releases or self.rejects or self.retries
                    or self.defers or self.starts)


def settle(outcomes: Sequence[Outcome], hostname: str, store_results: bool) -> Round:
    """The writes that settle ``outcomes``: results to store, messages to ack or give back."""
    writes = Round()
    now = timezone.now()
    for o in outcomes:
        if o.store and store_results:
            writes.records.append(ResultRecord(
                o.job.task_id, o.state, o.job.task_name, o.content_type, o.result, o.traceback,
                o.args_repr, o.kwargs_repr, hostname, o.runtime,
                None if o.state == states.RETRY else now, o.job.queue,
            ))
        message_id = o.job.message_id
        if o.action == "ack":
            writes.acks.append(message_id)
        elif o.action in ("requeue", "release"):
            writes.releases.append(message_id)
        elif o.action == "reject":
            writes.rejects.append((message_id, o.result_repr))
        else:
            assert o.action == "retry" and o.retry_at is not None
            writes.retries.append((message_id, o.retry_at, o.retry_body))
    return writes


def processed(outcomes: Sequence[Outcome]) -> int:
    """How many of ``outcomes`` count as processed: all but messages given back to the queue."""
    return sum(1 for o in outcomes if o.action not in ("requeue", "release"))


def run(
    using: str,
    backend: ResultBackend,
    owner: int | None,
    writes: Round,
    claim: ClaimRequest | None = None,
) -> list[claiming.Claimed]:
    """Carry out one round atomically; returns what the claim took."""
    if claim is not None and (claim.limit <= 0 or not claim.queues):
        claim = None
    if _one_statement(using, backend, writes):
        return _run_as_one_statement(using, backend, owner, writes, claim)
    return broker.retry_if_locked(using, lambda: _run_in_transaction(
        using, backend, owner, writes, claim))


def _one_statement(using: str, backend: ResultBackend, writes: Round) -> bool:
    if connections[using].vendor != "postgresql":
        return False
    if writes.releases or writes.rejects or writes.retries or writes.defers:
        return False  # the rare outcomes: a transaction of a few statements
    return not writes.records or not backend.enabled or (
        isinstance(backend, DatabaseBackend) and backend.using == using
    )


def _run_as_one_statement(
    using: str, backend: ResultBackend, owner: int | None, writes: Round,
    claim: ClaimRequest | None,
) -> list[claiming.Claimed]:
    parts: list[tuple[str, list[object]]] = []
    if writes.records and backend.enabled:
        assert isinstance(backend, DatabaseBackend)
        parts.append(backend.upsert(writes.records))
    if writes.acks:
        parts.append(broker.ack_statement(using, writes.acks, owner))
    if writes.starts:
        parts.append(broker.start_statement(using, writes.starts, writes.acks_late, owner))
    if claim is not None:
        sql, params = claiming.claim_statement(using, claim.queues, claim.limit, claim.worker,
                                               owner, claim.lease_seconds, claim.start, parts)
        return claiming.claimed_from_rows(sql_execute(using, sql, params, fetch=True))
    if not parts:
        return []
    last, last_params = parts.pop()
    sql = "".join(f"{'WITH' if i == 0 else ','} w{i} AS ({part}) "
                  for i, (part, _) in enumerate(parts)) + last
    sql_execute(using, sql, [p for _, part_params in parts for p in part_params] + last_params)
    return []


def _run_in_transaction(
    using: str, backend: ResultBackend, owner: int | None, writes: Round,
    claim: ClaimRequest | None,
) -> list[claiming.Claimed]:
    with transaction.atomic(using=using):
        if writes.records and backend.enabled:
            backend.store(writes.records)
        broker.ack(using, writes.acks, owner)
        broker.requeue(using, writes.releases, owner)
        for message_id, error in writes.rejects:
            broker.reject(using, [message_id], error, owner)
        for message_id, when, body in writes.retries:
            broker.retry(using, message_id, when, body, owner)
        for seconds, ids in writes.defers:
            broker.defer(using, ids, seconds, owner)
        broker.start(using, writes.starts, writes.acks_late, owner)
        if claim is None:
            return []
        return claiming.claim(using, claim.queues, claim.limit, claim.worker, owner,
                            claim.lease_seconds, claim.start)
