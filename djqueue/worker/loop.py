"""The worker: claims messages, hands them to a pool, stores outcomes and acknowledges.

:meth:`Worker.loop` is one iteration: a round (:mod:`djqueue.worker.rounds`: store what finished and
acknowledge it, mark started what the pool takes, claim more, in one trip to the database), then
a wait for outcomes; :meth:`Worker.run` repeats it until a shutdown signal. Tests drive
``loop()`` directly with the ``solo`` pool.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import DataError, IntegrityError, InterfaceError, OperationalError, connections
from django.db.models.functions import Now

from ..broker import operations
from ..broker.base import DEAD_ROWS
from ..broker.rows import Claimed, ClaimRequest
from . import heartbeat, rounds
from ..client import routing
from .. import states
from ..client.base import App
from ..backends import ResultRecord
from ..exceptions import ImproperlyConfigured, TaskRevokedError
from ..exceptions import EncodeError
from .execution import Job, Outcome, log_outcome, refused, unrun
from .expiry import PeriodicCleanup
from ..broker.listen import Listener
from .pools import POOLS, Plan, Pool
from .throttle import Throttle
from .options import TaskOptions
from .control import ControlPanel

logger = logging.getLogger("djqueue.worker")

T = TypeVar("T")

DB_RETRY_MAX_PAUSE = 10.0
#: The most messages one claim takes (a batching pool may ask for more than the prefetch limit).
MAX_CLAIM = 500
REVOCATION_CHECK_INTERVAL = 1.0


def default_hostname(template: str | None = None) -> str:
    """Expand Celery's ``%h`` (host), ``%n`` (host name) and ``%d`` (domain) in a node name."""
    host = socket.getfqdn() or socket.gethostname()
    name, _, domain = host.partition(".")
    template = template or "celery@%h"
    return template.replace("%h", host).replace("%n", name).replace("%d", domain)


class Worker:
    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        hostname: str | None = None,
        prefetch_multiplier: int | None = None,
        poll_interval: float | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        max_tasks_per_child: int | None = None,
    ) -> None:
        conf = app.conf
        self.app = app
        self.using = conf.broker_alias
        self.queues = routing.worker_queues(conf, queues)
        self.concurrency = int(concurrency or conf.CELERYD_CONCURRENCY or os.cpu_count() or 1)
        self.pool_name = pool or conf.CELERYD_POOL
        if self.pool_name not in POOLS:
            raise ImproperlyConfigured(
                f"Unknown pool {self.pool_name!r}; choose one of {', '.join(POOLS)}"
            )
        if self.concurrency < 1:
            raise ImproperlyConfigured("Concurrency must be at least 1")
        if self.pool_name == "solo":
            self.concurrency = 1
        self.hostname = default_hostname(hostname)
        multiplier = (
            conf.CELERYD_PREFETCH_MULTIPLIER if prefetch_multiplier is None else prefetch_multiplier
        )
        self.prefetch_limit = self.concurrency * max(int(multiplier), 1)
        self.poll_interval = conf.polling_interval if poll_interval is None else poll_interval
        self.time_limit = conf.CELERYD_TASK_TIME_LIMIT if time_limit is None else time_limit
        self.soft_time_limit = (
            conf.CELERYD_TASK_SOFT_TIME_LIMIT if soft_time_limit is None else soft_time_limit
        )
        self.heartbeat_timeout = float(conf.DJQUEUE_WORKER_LOST_TIMEOUT)
        self.max_deliveries: int | None = conf.DJQUEUE_MAX_DELIVERIES or None
        self.result_serializer = conf.CELERY_RESULT_SERIALIZER
        self.fork_lock = threading.Lock()
        self.pool: Pool = POOLS[self.pool_name](
            self.concurrency,
            self.result_serializer,
            max_tasks_per_child=max_tasks_per_child or conf.CELERYD_MAX_TASKS_PER_CHILD,
            fork_lock=self.fork_lock,
            batch_window=float(conf.DJQUEUE_POOL_BATCH_WINDOW),
            max_deliveries=self.max_deliveries,
        )
        self.backend = app.backend
        self.throttle = Throttle(app)
        self.options = TaskOptions(app, self.throttle, self.time_limit, self.soft_time_limit)
        self.cleanup = PeriodicCleanup(app)
        self.node_id: int | None = None
        self.processed = 0
        self.stop_requested: str | None = None  # None, "warm" or "cold"
        self.finished = False
        self._announced_stop: str | None = None
        self._reserved: collections.deque[Claimed] = collections.deque()
        self._pending: list[Outcome] = []  # outcomes the next round settles
        self._next_poll = 0.0
        self._claim_now = True
        self._next_revocation_check = 0.0
        self._heartbeat: heartbeat.Heartbeat | None = None
        self._processed_at_poke = 0
        self._control = ControlPanel(self)  # remote control: djqueue/worker_control.py
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.listener = Listener(self.using, self.queues)

    # Life cycle.

    def start(self) -> None:
        """Load the task modules, register this worker and start the pool."""
        broker = operations(self.using)  # fail early on a database that cannot be a broker
        if self.pool_name == "prefork":  # only djqueue's statements run in this process
            broker.steer_worker_planner([threading.main_thread().name, heartbeat.THREAD_NAME])
        self.app.tasks  # autodiscovery happens before children are forked
        self.throttle.validate()
        self.node_id = self._with_db_retry(lambda: heartbeat.register(self))
        self._with_db_retry(self._control.start)
        self.pool.start()

    def run(self) -> None:
        """Work until a shutdown signal; returns after a clean shutdown."""
        self.start()
        self.listener.open()  # after the pool's first fork, so its children do not inherit it
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
        }
        previous_fd = signal.set_wakeup_fd(self._wake_w.fileno())
        self._heartbeat = heartbeat.Heartbeat(self, self.fork_lock)
        self._heartbeat.start()
        logger.info("%s ready.", self.hostname)
        try:
            while not self.finished:
                self.loop()
        finally:
            if self._reserved:  # only after an unexpected error: never keep claimed messages
                self._give_back_reserved()
            if self._pending:
                self.finish(self._pending, log=False)
            self.pool.stop()
            self._heartbeat.stop()
            self._with_db_retry(self._mark_stopped)
            self.listener.close()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _mark_stopped(self) -> None:
        from ..models import WorkerNode

        WorkerNode.objects.using(self.using).filter(pk=self.node_id).update(
            stopped_at=Now(), processed=self.processed, active="[]"
        )

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGQUIT or (signum == signal.SIGINT and self.stop_requested):
            self.stop_requested = "cold"
        elif not self.stop_requested:
            self.stop_requested = "warm"

    def request_stop(self, cold: bool = False) -> None:
        """Ask for a warm (finish running tasks) or cold (stop them now) shutdown."""
        self.stop_requested = "cold" if cold else (self.stop_requested or "warm")
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:
            pass

    def active_tasks(self) -> list[dict[str, Any]]:
        """What the pool runs now, for the heartbeat and inspection."""
        return [{"id": job.task_id, "name": job.task_name} for job in self.pool.running()]

    # One iteration.

    def loop(self) -> None:
        """One iteration: a round (settle what finished, start what the pool can take, claim
        more), then wait for outcomes, a wake-up or the next poll."""
        if self.stop_requested:
            self._shutdown_step()
            if self.finished:
                return
        self._control.poll()  # remote-control commands, twice a second
        self._check_revocations()
        self._round()
        extra = [self._wake_r, *self.listener.waitables()]
        outcomes = self.pool.wait(self.listener.limit(self._wait_timeout()), extra=extra)
        self._drain_wakeups()
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
        if self.stop_requested or not self.queues:
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
        writes = rounds.settle(outcomes, self.hostname, self.backend.enabled)
        taken: list[Claimed] = []
        plan = None if self.stop_requested else self._plan(writes, taken)
        limit = self._claim_limit(len(plan.jobs) if plan else 0)
        due = limit and (self._claim_now or time.monotonic() >= self._next_poll)
        claim = ClaimRequest(self.queues, limit, self.hostname, self.heartbeat_timeout,
                                    self.options.start_now(plan, self.pool.short_names())
                                    if plan else None) if due else None
        if not writes and claim is None:
            return False
        was_holding = bool(self._reserved or self.pool.running())
        try:
            done = self._with_db_retry(lambda: rounds.run(
                self.using, self.backend, self.node_id, writes, claim,
                lease_seconds=self.heartbeat_timeout))
        except (DataError, IntegrityError) as exc:
            # Not an outage (retried above): the database refused a value of this round. Its
            # transaction wrote nothing; the messages it was to start are still reserved.
            logger.error("The database refused a round (%s); settling its outcomes one by one.",
                         str(exc).strip())
            self._reserved.extendleft(reversed(taken))
            for outcome in outcomes:
                self._settle_alone(outcome)
            return False
        self.processed += rounds.processed(outcomes)
        if plan is not None and plan.jobs:
            self._submit_started(plan, done.started)
        if claim is None:
            return False
        self._took(done.claimed, claim.limit, was_holding)
        return bool(self._pending or (
            self._reserved and self.pool.plan().fits(self._reserved[0].task_name)))

    def _submit_started(self, plan: Plan, started: set[int]) -> None:
        """Hand the pool the jobs whose start the database confirmed. A reserved message whose
        start it did not confirm is no longer this worker's: its lease ran out (the database was
        out of reach, say) and another worker recovered it, so running it here too would run it
        twice."""
        gone = {job.message_id for job in plan.jobs if job.message_id not in started}
        for job in plan.jobs:
            if job.message_id in gone:
                logger.warning("Not starting %s[%s]: this worker no longer holds its message "
                               "(its lease ran out); the worker that holds it now runs it.",
                               job.task_name, job.task_id)
        if gone:
            plan.discard(gone)
        if plan.jobs:
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
            writes.starts.append(job.message_id)
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
            due = self._with_db_retry(lambda: operations(self.using).next_due(self.queues))
            if due is not None:
                self._next_poll = min(self._next_poll, time.monotonic() + due)
            burst = self.processed - self._processed_at_poke
            if self._heartbeat and burst >= DEAD_ROWS // 2:
                self._processed_at_poke = self.processed
                self._heartbeat.poke(dead_rows=2 * burst)  # a claim and an ack leave one each
        registry = self.app.tasks
        started = self.pool.plan()
        for message in claimed:
            refusal = refused(message, registry, self.result_serializer)
            if refusal is not None:
                self._pending.append(refusal(self.job_for(message)))
                continue
            logger.info("Received task: %s[%s]", message.task_name, message.task_id)
            if message.started:
                started.force(self.job_for(message))
            else:
                self._reserved.append(message)
        if started.jobs:
            self.pool.submit(started)

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
        revoked = self._with_db_retry(lambda: operations(self.using).revoked_among(held))
        if not revoked:
            return
        dropped = [m for m in self._reserved if m.task_id in revoked]
        if dropped:
            self._reserved = collections.deque(m for m in self._reserved if m.task_id not in revoked)
            for message in dropped:
                logger.info("Discarding revoked task: %s[%s]", message.task_name, message.task_id)
            self._pending.extend(unrun(self.job_for(m), TaskRevokedError("revoked"),
                                       self.result_serializer, state=states.REVOKED)
                                 for m in dropped)
        for task_id, (terminate, signame) in revoked.items():
            if terminate and task_id in running:
                logger.info("Terminating %s[%s] (%s)", running[task_id].task_name, task_id, signame)
                self.pool.terminate_job(running[task_id].message_id, signame)

    def finish(self, outcomes: Sequence[Outcome], log: bool = True) -> None:
        """Settle ``outcomes`` now, in one round of their own (results stored, messages
        acknowledged or given back, atomically)."""
        if log:
            for outcome in outcomes:
                log_outcome(outcome)
        try:
            self._settle(outcomes)
        except (DataError, IntegrityError) as exc:
            logger.error("The database refused a round (%s); settling its outcomes one by one.",
                         str(exc).strip())
            for outcome in outcomes:
                self._settle_alone(outcome)

    def _settle(self, outcomes: Sequence[Outcome]) -> None:
        writes = rounds.settle(outcomes, self.hostname, self.backend.enabled)
        self._with_db_retry(lambda: rounds.run(self.using, self.backend, self.node_id, writes,
                                               lease_seconds=self.heartbeat_timeout))
        self.processed += rounds.processed(outcomes)

    def _settle_alone(self, outcome: Outcome) -> None:
        """Settle one outcome of a round the database refused. If its own result is what the
        database refuses, the task fails with :class:`EncodeError` saying so; if even that is
        refused, the message is settled without a result. A bad value never stops the worker."""
        attempts = [outcome]
        if outcome.store:
            job = outcome.job
            attempts.append(unrun(job, EncodeError(
                f"The outcome of {job.task_name}[{job.task_id}] ({outcome.state}) could not be "
                "stored: the database refused it (see the worker's log)."), self.result_serializer,
                action="reject" if outcome.action == "reject" else "ack"))
            attempts.append(unrun(job, EncodeError("unstorable outcome"), self.result_serializer,
                                  action=attempts[-1].action, store=False))
        for attempt in attempts:
            try:
                self._settle([attempt])
                return
            except (DataError, IntegrityError) as exc:
                logger.error("The database refused the outcome of %s[%s]: %s",
                             outcome.job.task_name, outcome.job.task_id, str(exc).strip())
        logger.error("Could not settle %s[%s]; its message stays held by this worker.",
                     outcome.job.task_name, outcome.job.task_id)

    # Shutdown.

    def _shutdown_step(self) -> None:
        if self._announced_stop != self.stop_requested:
            self._announced_stop = self.stop_requested
            logger.warning("worker: %s shutdown (MainProcess)", (self.stop_requested or "").title())
        if self._reserved:
            self._give_back_reserved()
        if self.stop_requested == "cold" and self.pool.running():
            self.finish(self.pool.terminate())
        if self._pending:
            self.finish(self._pending, log=False)
            self._pending = []
        if not self.pool.running():
            self.finished = True

    def _give_back_reserved(self) -> None:
        ids = [message.id for message in self._reserved]
        self._reserved.clear()
        count = len(self._with_db_retry(lambda: operations(self.using).requeue(ids, self.node_id)))
        logger.info("Returned %d reserved message(s) to the queue.", count)

    # Database faults.

    def _with_db_retry(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` until the database answers, pausing longer after each failure.

        Nothing the worker holds is dropped while the database is away; the same write is
        retried when it is back.
        """
        pause = 0.1
        while True:
            try:
                return operation()
            except (OperationalError, InterfaceError) as exc:
                logger.error("Database error: %s; retrying in %.1fs", str(exc).strip(), pause)
                try:
                    connections[self.using].close()
                except Exception:  # noqa: BLE001 - the connection is broken anyway
                    pass
                time.sleep(pause)
                pause = min(pause * 2, DB_RETRY_MAX_PAUSE)
