"""The worker: claims messages, hands them to a pool, stores outcomes and acknowledges.

:meth:`Worker.loop` is one iteration (claim what capacity allows, dispatch, wait for outcomes,
store them); :meth:`Worker.run` repeats it until a shutdown signal. Tests drive ``loop()``
directly with the ``solo`` pool.
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

from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from . import broker, heartbeat, routing, states
from .application import App
from .backends import ResultRecord
from .exceptions import ImproperlyConfigured, NotRegistered, TaskRevokedError
from .execution import Job, Outcome, log_outcome, unrun
from .expiry import PeriodicCleanup
from .notify import Listener
from .pool import POOLS, Pool
from .ratelimit import Throttle
from .worker_control import ControlPanel

logger = logging.getLogger("djqueue.worker")

T = TypeVar("T")

DB_RETRY_MAX_PAUSE = 10.0
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
        self.result_serializer = conf.CELERY_RESULT_SERIALIZER
        self.fork_lock = threading.Lock()
        self.pool: Pool = POOLS[self.pool_name](
            self.concurrency,
            self.result_serializer,
            max_tasks_per_child=max_tasks_per_child or conf.CELERYD_MAX_TASKS_PER_CHILD,
            fork_lock=self.fork_lock,
        )
        self.backend = app.backend
        self.throttle = Throttle(app)
        self.cleanup = PeriodicCleanup(app)
        self.node_id: int | None = None
        self.processed = 0
        self.stop_requested: str | None = None  # None, "warm" or "cold"
        self.finished = False
        self._announced_stop: str | None = None
        self._reserved: collections.deque[broker.Claimed] = collections.deque()
        self._next_poll = 0.0
        self._claim_now = True
        self._next_revocation_check = 0.0
        self._heartbeat: heartbeat.Heartbeat | None = None
        self._control = ControlPanel(self)  # remote control: djqueue/worker_control.py
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.listener = Listener(self.using, self.queues)

    # Life cycle.

    def start(self) -> None:
        """Load the task modules, register this worker and start the pool."""
        broker.vendor(self.using)  # fail early on a database that cannot be a broker
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
            self.pool.stop()
            self._heartbeat.stop()
            self._with_db_retry(self._mark_stopped)
            self.listener.close()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _mark_stopped(self) -> None:
        from .models import WorkerNode

        WorkerNode.objects.using(self.using).filter(pk=self.node_id).update(
            stopped_at=timezone.now(), processed=self.processed, active="[]"
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
        """Claim if there is room and it is time, dispatch, wait for outcomes, store them."""
        if self.stop_requested:
            self._shutdown_step()
            if self.finished:
                return
        elif self._claim_due():
            self._claim()
        self._control.poll()  # remote-control commands, twice a second
        self._check_revocations()
        self._dispatch()
        extra = [self._wake_r, *self.listener.waitables()]
        outcomes = self.pool.wait(self.listener.limit(self._wait_timeout()), extra=extra)
        self._drain_wakeups()
        if self.listener.heard():
            self._claim_now = True
        if self.listener.control_heard():
            self._control.poll(now=True)
        if outcomes:
            self.finish(outcomes)
            self._claim_now = True
        if not self.stop_requested:
            self.cleanup.tick()

    def _capacity(self) -> int:
        return self.prefetch_limit - len(self._reserved) - len(self.pool.running())

    def _claim_due(self) -> bool:
        capacity = self._capacity()
        if capacity <= 0 or (self._reserved and capacity < self.prefetch_limit // 2):
            return False  # enough is buffered: refill in batches, not one claim per task
        return self._claim_now or time.monotonic() >= self._next_poll

    def _wait_timeout(self) -> float:
        if self.stop_requested:
            return 0.1
        timeout = self.poll_interval
        if self._capacity() > 0:
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

    # Claiming and dispatching.

    def _claim(self) -> None:
        limit = self._capacity()
        was_holding = bool(self._reserved or self.pool.running())
        claimed = self._with_db_retry(
            lambda: broker.claim(self.using, self.queues, limit, self.hostname, self.node_id,
                                 self.heartbeat_timeout)
        )
        self._claim_now = len(claimed) == limit
        self._next_poll = time.monotonic() + self.poll_interval
        if not was_holding:
            # The claim itself reported revocations of what it took.
            self._next_revocation_check = time.monotonic() + REVOCATION_CHECK_INTERVAL
        if not claimed:  # idle: wake when the next delayed message is due, if that is sooner
            due = self._with_db_retry(lambda: broker.next_due(self.using, self.queues))
            if due is not None:
                self._next_poll = min(self._next_poll, time.monotonic() + due)
        refused: list[Outcome] = []
        registry = self.app.tasks
        for message in claimed:
            if message.revoked:
                logger.info("Discarding revoked task: %s[%s]", message.task_name, message.task_id)
                refused.append(unrun(self.job_for(message), TaskRevokedError("revoked"),
                                     self.result_serializer, state=states.REVOKED))
            elif message.expired:
                logger.info("Discarding expired task: %s[%s]", message.task_name, message.task_id)
                refused.append(unrun(self.job_for(message), TaskRevokedError("expired"),
                                     self.result_serializer, state=states.REVOKED))
            elif message.task_name not in registry:
                logger.error(
                    "Received unregistered task of type %r.\nThe message has been set aside "
                    "(state 'rejected'), not run: did you import the module that defines it "
                    "(CELERY_IMPORTS, or a tasks.py in an installed app)?\nid: %s",
                    message.task_name, message.task_id,
                )
                refused.append(unrun(self.job_for(message), NotRegistered(message.task_name),
                                     self.result_serializer, action="reject"))
            else:
                logger.info("Received task: %s[%s]", message.task_name, message.task_id)
                self._reserved.append(message)
        if refused:
            self.finish(refused, log=False)

    def job_for(self, message: broker.Claimed) -> Job:
        task = self.app.tasks.get(message.task_name)
        acks_late = bool(task.resolved("acks_late", "CELERY_ACKS_LATE")) if task else False

        def limit(call: float | None, option: str, worker_value: float | None) -> float | None:
            if call is not None:
                return call
            own = getattr(task, option, None) if task else None
            return own if own is not None else worker_value

        return Job(
            message.id, message.task_id, message.task_name, message.queue, message.priority,
            message.content_type, message.body, message.retries, self.hostname, acks_late,
            time_limit=limit(message.time_limit, "time_limit", self.time_limit),
            soft_time_limit=limit(message.soft_time_limit, "soft_time_limit",
                                  self.soft_time_limit),
        )

    def _dispatch(self) -> None:
        if self.stop_requested:
            return
        admitted, over_limit = self.throttle.admit(self._reserved, self.pool.free_slots())
        for wait, ids in over_limit:
            self._defer(ids, wait)
        if not admitted:
            return
        jobs = [self.job_for(message) for message in admitted]
        started = [
            ResultRecord(job.task_id, states.STARTED, job.task_name, worker=self.hostname,
                         queue=job.queue)
            for job in jobs
            if self.app.tasks[job.task_name].resolved("track_started", "CELERY_TRACK_STARTED")
        ]

        def mark_started() -> None:
            broker.start(self.using, [job.message_id for job in jobs],
                         [job.message_id for job in jobs if job.acks_late], self.node_id)
            if started and self.backend.enabled:
                self.backend.store(started)

        self._with_db_retry(mark_started)
        for job in jobs:
            self.pool.submit(job)

    def _defer(self, ids: list[int], wait: float) -> None:
        """Rate-limited messages wait in the table, not here; claim again when they are due."""
        self._with_db_retry(lambda: broker.defer(self.using, ids, wait, self.node_id))
        self._next_poll = min(self._next_poll, time.monotonic() + wait)

    def _check_revocations(self) -> None:
        """About once a second, obey revocations of what this worker holds."""
        now = time.monotonic()
        running = {job.task_id: job for job in self.pool.running()}
        if now < self._next_revocation_check or not (self._reserved or running):
            return
        self._next_revocation_check = now + REVOCATION_CHECK_INTERVAL
        held = [m.task_id for m in self._reserved] + list(running)
        revoked = self._with_db_retry(lambda: broker.revoked_among(self.using, held))
        if not revoked:
            return
        dropped = [m for m in self._reserved if m.task_id in revoked]
        if dropped:
            self._reserved = collections.deque(m for m in self._reserved if m.task_id not in revoked)
            for message in dropped:
                logger.info("Discarding revoked task: %s[%s]", message.task_name, message.task_id)
            self.finish([unrun(self.job_for(m), TaskRevokedError("revoked"),
                               self.result_serializer, state=states.REVOKED) for m in dropped],
                        log=False)
        for task_id, (terminate, signame) in revoked.items():
            if terminate and task_id in running:
                logger.info("Terminating %s[%s] (%s)", running[task_id].task_name, task_id, signame)
                self.pool.terminate_job(running[task_id].message_id, signame)

    # Outcomes.

    def finish(self, outcomes: Sequence[Outcome], log: bool = True) -> None:
        """Store results and acknowledge, all in one transaction."""
        if log:
            for outcome in outcomes:
                log_outcome(outcome)
        now = timezone.now()
        records = [
            ResultRecord(
                o.job.task_id, o.state, o.job.task_name, o.content_type, o.result, o.traceback,
                o.args_repr, o.kwargs_repr, self.hostname, o.runtime,
                None if o.state == states.RETRY else now, o.job.queue,
            )
            for o in outcomes
            if o.store
        ]
        by_action: dict[str, list[Outcome]] = collections.defaultdict(list)
        for outcome in outcomes:
            by_action[outcome.action].append(outcome)

        def write() -> None:
            with transaction.atomic(using=self.using):
                if records and self.backend.enabled:
                    self.backend.store(records)
                mine = self.node_id
                ids = {action: [o.job.message_id for o in group]
                       for action, group in by_action.items()}
                broker.ack(self.using, ids.get("ack", []), mine)
                broker.requeue(self.using, ids.get("requeue", []), mine)
                for outcome in by_action["reject"]:
                    broker.reject(self.using, [outcome.job.message_id], outcome.result_repr,
                                  mine)
                for outcome in by_action["retry"]:
                    assert outcome.retry_at is not None
                    broker.retry(self.using, outcome.job.message_id, outcome.retry_at,
                                 outcome.retry_body, mine)

        self._with_db_retry(write)
        self.processed += sum(1 for o in outcomes if o.action != "requeue")

    # Shutdown.

    def _shutdown_step(self) -> None:
        if self._announced_stop != self.stop_requested:
            self._announced_stop = self.stop_requested
            logger.warning("worker: %s shutdown (MainProcess)", (self.stop_requested or "").title())
        if self._reserved:
            self._give_back_reserved()
        if self.stop_requested == "cold" and self.pool.running():
            self.finish(self.pool.terminate())
        if not self.pool.running():
            self.finished = True

    def _give_back_reserved(self) -> None:
        ids = [message.id for message in self._reserved]
        self._reserved.clear()
        count = self._with_db_retry(lambda: broker.requeue(self.using, ids, self.node_id))
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
