"""The worker's iteration: claims messages, hands them to a pool, stores outcomes and
acknowledges.

:meth:`Worker.loop` is one iteration: a round (:mod:`djqueue.worker.rounds`: store what finished
and acknowledge it, mark started what the pool takes, claim more, in one trip to the database),
then a wait for outcomes; :meth:`Worker.run` (:mod:`djqueue.worker.lifecycle`) repeats it until a
shutdown signal. Tests drive ``loop()`` directly with the ``solo`` pool.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence

from .. import states
from ..backends import ResultRecord
from ..broker import operations
from ..broker.base import DEAD_ROWS
from ..broker.flow import Gate
from ..broker.rows import Claimed, ClaimRequest
from ..client.headers import shadow_of
from ..exceptions import TaskRevokedError
from . import rounds, signaling
from .execution import Job, Outcome, refused, unrun
from .outcome_log import log_outcome
from .lifecycle import Lifecycle
from .pools import Plan
from .settle import REFUSED

logger = logging.getLogger("djqueue.worker")

#: The most messages one claim takes (a batching pool may ask for more than the prefetch limit).
MAX_CLAIM = 500
REVOCATION_CHECK_INTERVAL = 1.0


class Worker(Lifecycle):
    # One iteration.

    def loop(self) -> None:
        """One iteration: a round (settle what finished, start what the pool can take, claim
        more), then wait for outcomes, a wake-up or the next poll. The heartbeat thread may use
        the loop's connection only while the loop waits (``db_lock``)."""
        with self.db_lock:
            if self.stop_requested:
                self._shutdown_step()
                if self.finished:
                    return
            self._control.poll()  # remote-control commands, twice a second
            self._check_revocations()
            self._round()
            self.events.flush()
            extra = [self._wake_r, *self.listener.waitables()]  # may (re)open the listener
        outcomes = self.pool.wait(self.listener.limit(self._wait_timeout()), extra=extra)
        self._drain_wakeups()
        with self.db_lock:
            if self.listener.heard():
                self._claim_now = True
            if self.listener.control_heard():
                self._control.poll(now=True)
            if outcomes:
                for outcome in outcomes:
                    log_outcome(outcome)
                self._pending.extend(outcomes)
                self._claim_now = True
            if not self.stop_requested:
                self.cleanup.tick()

    def _claim_limit(self, planned: int = 0) -> int:
        """How many messages to claim now (0: none), whatever the time: up to the prefetch limit
        plus what a batching pool can take, refilled in batches rather than one claim per task."""
        if self.stop_requested or not self.claim_queues():
            return 0
        room = (self.prefetch_limit + self.pool.spare() - len(self._reserved)
                - len(self.pool.running()) - planned)
        if room <= 0 or (self._reserved and room < self.prefetch_limit // 2):
            return 0
        return min(room, MAX_CLAIM)

    def _wait_timeout(self) -> float:
        if self._pending:
            return 0.0
        if self.stop_requested:
            return 0.1
        timeout = self.poll_interval
        if self._claim_limit() > 0:
            timeout = 0.0 if self._claim_now else max(0.0, self._next_poll - time.monotonic())
        if self._reserved or self.pool.running():
            timeout = min(timeout, REVOCATION_CHECK_INTERVAL)
        return min(timeout, self._control.seconds_until_due())

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # Rounds: settling, starting and claiming in one trip to the database.

    def _round(self) -> None:
        """Settle pending outcomes, start what the pool takes, claim: one round trip. When the
        claim brought messages the pool can take at once, a second round starts them."""
        try:
            for _ in range(2):
                self.options.new_round()
                if not self._one_round():
                    return
        finally:
            self.options.end_round()

    def _one_round(self) -> bool:
        """One round trip; True when it claimed messages that the pool can take at once (or
        that must be settled without running), for another round to start them."""
        outcomes, self._pending = self._pending, []
        self.events.outcomes(outcomes)
        self.tally.add(outcomes)
        writes = rounds.settle(outcomes, self.hostname, self.backend.enabled)
        taken: list[Claimed] = []
        plan = None if self.stop_requested else self._plan(writes, taken)
        limit = self._claim_limit(len(plan.jobs) if plan else 0)
        due = limit and (self._claim_now or time.monotonic() >= self._next_poll)
        claim = ClaimRequest(self.claim_queues(), limit, self.hostname, self.heartbeat_timeout,
                                    self.options.start_now(plan, self.pool.short_names())
                                    if plan else None) if due else None
        if not writes and claim is None:
            return False
        was_holding = bool(self._reserved or self.pool.running())
        try:
            done = self.with_db_retry(lambda: rounds.run(
                self.using, self.backend, self.node_id, writes, claim,
                lease_seconds=self.heartbeat_timeout))
        except REFUSED as exc:
            # Not an outage (retried above): the database refused a value of this round. Its
            # transaction wrote nothing; the messages it was to start are still reserved.
            self._reserved.extendleft(reversed(taken))
            self.processed += self.settler.settle_each(outcomes, exc)
            return False
        self.processed += rounds.processed(outcomes)
        if plan is not None and plan.jobs:
            self._submit_started(plan, done.started, writes.gated)
        if claim is None:
            return False
        self._took(done.claimed, claim.limit, was_holding)
        return bool(self._pending or (
            self._reserved and self.pool.plan().fits(self._reserved[0].task_name)))

    def _submit_started(self, plan: Plan, started: set[int],
                        gated: dict[Gate, list[int]]) -> None:
        """Hand the pool the jobs whose start the database confirmed. A reserved message whose
        start it did not confirm is no longer this worker's: its lease ran out (the database was
        out of reach, say) and another worker recovered it, so running it here too would run it
        twice. Or it is over a cluster-wide limit: the round deferred it (``gated``)."""
        gone = {job.message_id for job in plan.jobs if job.message_id not in started}
        deferred = {i for ids in gated.values() for i in ids} if gated else set()
        for job in plan.jobs:
            if job.message_id in deferred and job.message_id in gone:
                logger.debug("%s[%s] is over a cluster-wide limit; it waits in the table.",
                             job.task_name, job.task_id)
            elif job.message_id in gone:
                logger.warning("Not starting %s[%s]: this worker no longer holds its message "
                               "(its lease ran out); the worker that holds it now runs it.",
                               job.task_name, job.task_id)
        if gone:
            plan.discard(gone)
        if plan.jobs:
            self._hand_over(plan)

    def _hand_over(self, plan: Plan) -> None:
        """Give the pool the jobs of ``plan``, counted by the name shown (``inspect stats``'
        ``total``: Celery counts a task when its pool accepts it, under its shadow name)."""
        total = self.total
        for job in plan.jobs:
            total[job.shown_name] += 1
        self.events.started(plan.jobs)
        self.pool.submit(plan)

    def _plan(self, writes: rounds.Round, taken: list[Claimed]) -> Plan:
        """Take reserved messages the pool has room for (listed in ``taken``); rate-limited
        ones wait in the table."""
        plan = self.pool.plan()
        over_limit: dict[str, tuple[float, list[int]]] = {}
        while self._reserved and plan.fits(self._reserved[0].task_name):
            message = self._reserved.popleft()
            rate = self.options.get(message.task_name).rate
            wait = self.throttle.wait_time(message.task_name, rate) if rate is not None else 0.0
            if wait:
                logger.debug("%s[%s] is over its rate limit; waits %.3fs",
                             message.task_name, message.task_id, wait)
                over_limit.setdefault(message.task_name, (wait, []))[1].append(message.id)
            else:
                plan.take(self.job_for(message))
            taken.append(message)
        for wait, ids in over_limit.values():
            writes.defers.append((wait, ids))
            self._next_poll = min(self._next_poll, time.monotonic() + wait)
        for job in plan.jobs:
            self.options.seen(job.task_name)
            gate = self.options.get(job.task_name).gate
            # A gated start is admitted (or deferred) by the round, in the database.
            (writes.gated.setdefault(gate, []) if gate else writes.starts).append(job.message_id)
            if job.acks_late:
                writes.acks_late.append(job.message_id)
            if self.backend.enabled and self.options.get(job.task_name).track_started:
                writes.records.append(ResultRecord(job.task_id, states.STARTED, job.task_name,
                                                   worker=self.hostname, queue=job.queue))
        return plan

    def _took(self, claimed: list[Claimed], limit: int, was_holding: bool) -> None:
        """Keep what a claim took; what must not run (revoked, expired, unknown) is settled in
        the next round without running."""
        self._claim_now = len(claimed) == limit
        self._next_poll = time.monotonic() + self.poll_interval
        if not was_holding:
            # The claim itself reported revocations of what it took.
            self._next_revocation_check = time.monotonic() + REVOCATION_CHECK_INTERVAL
        if not claimed:  # idle: wake when the next delayed message is due, if that is sooner
            due = self.with_db_retry(lambda: operations(self.using).next_due(self.claim_queues()))
            if due is not None:  # one already due (taken by another worker meanwhile?): soon
                self._next_poll = min(self._next_poll, time.monotonic() + max(due, 0.05))
            burst = self.processed - self._processed_at_poke
            if self._heartbeat and burst >= DEAD_ROWS // 2:
                self._processed_at_poke = self.processed
                self._heartbeat.poke(dead_rows=2 * burst)  # a claim and an ack leave one each
        self.events.received(claimed)
        registry = self.app.tasks
        accept = self.app.conf.CELERY_ACCEPT_CONTENT or []
        started = self.pool.plan()
        # A message still listed as reserved here that recovery gave back (its lease ran out
        # while the database was away) and this claim took again: listed twice, it ran twice
        # (each start is confirmed: this worker holds it). The entry already listed runs it.
        again = {message.id for message in self._reserved} if self._reserved else None
        for message in claimed:
            if again and message.id in again:
                continue
            message.shown_name = shadow_of(message.body, message.content_type,
                                           accept) or message.task_name
            refusal = refused(message, registry, self.result_serializer)
            if refusal is not None:
                self._pending.append(refusal(self.job_for(message)))
                signaling.refused(self, message)
                continue
            logger.info("Received task: %s[%s]", message.shown_name, message.task_id,
                        extra={"djqueue_task": message})
            signaling.received(self, message)
            if message.started:
                started.force(self.job_for(message))
            else:
                self._reserved.append(message)
        if started.jobs:
            self._hand_over(started)

    def job_for(self, message: Claimed) -> Job:
        return self.options.job_for(message, self.hostname)

    def _check_revocations(self) -> None:
        """About once a second, obey revocations of what this worker holds."""
        now = time.monotonic()
        if now < self._next_revocation_check:
            return  # before listing what the pool holds: that is up to hundreds of jobs
        running = {job.task_id: job for job in self.pool.running()}
        if not (self._reserved or running):
            return
        self._next_revocation_check = now + REVOCATION_CHECK_INTERVAL
        held = [m.task_id for m in self._reserved] + list(running)
        revoked = self.with_db_retry(lambda: operations(self.using).revoked_among(held))
        if not revoked:
            return
        dropped = [m for m in self._reserved if m.task_id in revoked]
        if dropped:
            self._reserved = collections.deque(m for m in self._reserved if m.task_id not in revoked)
            for message in dropped:
                logger.info("Discarding revoked task: %s[%s]", message.shown_name, message.task_id)
                signaling.revoked(self, message)
            self._pending.extend(unrun(self.job_for(m), TaskRevokedError("revoked"),
                                       self.result_serializer, state=states.REVOKED)
                                 for m in dropped)
        for task_id, (terminate, signame) in revoked.items():
            if terminate and task_id in running:
                logger.info("Terminating %s[%s] (%s)", running[task_id].shown_name, task_id, signame)
                signaling.revoked(self, running[task_id], terminated=True, signame=signame)
                self.pool.terminate_job(running[task_id].message_id, signame)

    def finish(self, outcomes: Sequence[Outcome], log: bool = True) -> None:
        """Settle ``outcomes`` now, in one round of their own (results stored, messages
        acknowledged or given back, atomically)."""
        if log:
            for outcome in outcomes:
                log_outcome(outcome)
        self.events.outcomes(outcomes)
        self.tally.add(outcomes)
        self.processed += self.settler.settle(outcomes)
