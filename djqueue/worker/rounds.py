"""A worker's round: everything it has to tell the database between two waits, sent at once.

Each round stores the results of the tasks that finished and acknowledges their messages, settles
the other outcomes (retries, rejects, messages given back), marks started what is about to be
handed to the pool, and claims more. The worker's cost per task is then a share of one round trip
rather than several round trips of its own.

Where the broker can (:attr:`~djqueue.broker.base.Operations.one_statement_rounds`: PostgreSQL),
the common round (results in the database backend, acknowledgements, starts and a claim, and
what follows finished tasks of workflows: their messages, one chord's count-down) is a single
statement (:meth:`~djqueue.broker.base.Operations.run_round`): the writes are data-modifying
``WITH`` queries and the claim is the main query, so the round is one implicit transaction with
one commit. Any other round is one transaction of a few statements (so is one that takes a chord
to zero: its body is planned here, with the members' results); on SQLite statements cost no
network round trip, only the commit counts.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from .. import states
from ..backends import ResultBackend, ResultRecord
from ..backends.database import DatabaseBackend
from ..broker import operations
from ..broker.base import Operations, RoundNeedsTransaction
from ..broker.flow import Gate, admit
from ..broker.rows import Claimed, ClaimRequest
from . import workflow, workflow_writes
from .execution import Outcome


@dataclass(slots=True)
class Round:
    """The writes of one round. Message ids are those the worker holds (its ``owner`` id)."""

    records: list[ResultRecord] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    #: Held messages to give back to the queue that never began: reserved messages at shutdown,
    #: jobs queued in a pool process that died (their start does not count as a delivery).
    releases: list[int] = field(default_factory=list)
    #: Started ``acks_late`` messages whose process was lost: back to the queue, run again.
    requeues: list[int] = field(default_factory=list)
    rejects: list[tuple[int, str]] = field(default_factory=list)
    retries: list[tuple[int, datetime.datetime, str | None]] = field(default_factory=list)
    #: Rate-limited messages: ``(seconds to wait, ids)``.
    defers: list[tuple[float, list[int]]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    acks_late: list[int] = field(default_factory=list)
    #: What follows the finished tasks of workflows (:mod:`.workflow`).
    flows: list[workflow.Flow] = field(default_factory=list)
    #: Reserved messages of limited tasks to start if admitted (djqueue.broker.flow), by gate.
    gated: dict[Gate, list[int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.records or self.acks or self.releases or self.requeues or self.rejects
                    or self.retries or self.defers or self.starts or self.flows or self.gated)


@dataclass(slots=True)
class Done:
    """What a round did: the messages its claim took, and which of the messages it was asked to
    start it started (only those may run: the others this worker no longer holds)."""

    claimed: list[Claimed] = field(default_factory=list)
    started: set[int] = field(default_factory=set)


def settle(outcomes: Sequence[Outcome], hostname: str, store_results: bool) -> Round:
    """The writes that settle ``outcomes``: results to store, messages to ack or give back."""
    writes = Round()
    now = timezone.now()
    for o in outcomes:
        if o.store and store_results:
            writes.records.append(ResultRecord(
                o.job.task_id, o.state, o.job.task_name, o.content_type, o.result, o.traceback,
                o.args_repr, o.kwargs_repr, hostname, o.runtime,
                None if o.state == states.RETRY else now, o.job.queue, o.workers,
            ))
        message_id = o.job.message_id
        if o.flow is not None:
            writes.flows.append(o.flow)
        if o.action == "ack":
            writes.acks.append(message_id)
        elif o.action == "requeue":
            writes.requeues.append(message_id)
        elif o.action == "release":
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
    *,
    lease_seconds: float,
) -> Done:
    """Carry out one round atomically.

    A result is stored only for a message this worker still holds (the acknowledgement, give-back
    or start that settles it found the row with this worker as its owner): an outcome that comes
    after another worker recovered the message (this one's lease ran out while the database was
    away) never overwrites what the database decided since.
    """
    if claim is not None and (claim.limit <= 0 or not claim.queues):
        claim = None
    broker = operations(using)
    if _one_statement(broker, backend, writes):
        records = writes.records if backend.enabled else []
        flows, with_flows = (workflow_writes.rows(writes.flows, claim, backend.enabled)
                             if writes.flows else (None, claim))
        try:
            claimed, started = broker.run_round(owner, writes.acks, writes.starts,
                                                writes.acks_late, records, with_flows,
                                                lease_seconds, flows)
            return Done(claimed, started)
        except RoundNeedsTransaction:
            pass  # a chord's last members: its body is written with them, in a transaction
    return broker.retrying(lambda: _run_in_transaction(
        broker, backend, owner, writes, claim, lease_seconds))


def _one_statement(broker: Operations, backend: ResultBackend, writes: Round) -> bool:
    if not broker.one_statement_rounds:
        return False
    if (writes.releases or writes.requeues or writes.rejects or writes.retries or writes.defers
            or writes.gated
            or (writes.flows and not workflow_writes.in_one_statement(writes.flows))):
        return False  # rare outcomes, limited starts: a transaction of a few statements
    stores = writes.records or any(flow.children for flow in writes.flows)
    return not stores or not backend.enabled or (
        isinstance(backend, DatabaseBackend) and backend.using == broker.using
    )


def _run_in_transaction(
    broker: Operations, backend: ResultBackend, owner: int | None, writes: Round,
    claim: ClaimRequest | None, lease_seconds: float,
) -> Done:
    with transaction.atomic(using=broker.using):
        held = set(broker.ack(writes.acks, owner))
        held.update(broker.unstart(writes.releases, owner))
        held.update(broker.requeue(writes.requeues, owner))
        for message_id, error in writes.rejects:
            held.update(broker.reject([message_id], error, owner))
        for message_id, when, body in writes.retries:
            held.update(broker.retry(message_id, when, body, owner))
        for seconds, ids in writes.defers:
            broker.defer(ids, seconds, owner)
        starts = writes.starts
        if writes.gated:  # after the acks: a finished task frees its place first
            starts = [*starts, *admit(broker, writes.gated, owner)]
        started = broker.start(starts, writes.acks_late, owner, lease_seconds=lease_seconds)
        held.update(task_id for _, task_id in started)
        records = writes.records if owner is None else [
            record for record in writes.records if record.task_id in held]
        if records and backend.enabled:
            backend.store(records)
        if writes.flows:
            workflow_writes.write(broker, backend, None if owner is None else held, writes.flows)
        done = Done(started={message_id for message_id, _ in started})
        if claim is not None:
            done.claimed = broker.claim(claim.queues, claim.limit, claim.worker, owner,
                                        claim.lease_seconds, claim.start)
        return done
