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
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from . import broker, states
from .app import App
from .backends import ResultRecord
from .exceptions import ImproperlyConfigured, NotRegistered, TaskRevokedError
from .execution import Job, Outcome, unrun
from .notify import Listener
from .pool import POOLS, Pool

logger = logging.getLogger("djqueue.worker")

T = TypeVar("T")

#: How long a reservation holds before another worker may assume its holder is gone.
LEASE_SECONDS = 300.0
DB_RETRY_MAX_PAUSE = 10.0


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
    ) -> None:
        conf = app.conf
        self.app = app
        self.using = conf.broker_alias
        self.queues = list(queues or [conf.CELERY_DEFAULT_QUEUE])
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
        multiplier = conf.CELERYD_PREFETCH_MULTIPLIER if prefetch_multiplier is None else prefetch_multiplier
        self.prefetch_limit = self.concurrency * max(int(multiplier), 1)
        self.poll_interval = conf.polling_interval if poll_interval is None else poll_interval
        self.result_serializer = conf.CELERY_RESULT_SERIALIZER
        self.pool: Pool = POOLS[self.pool_name](self.concurrency, self.result_serializer)
        self.backend = app.backend
        self.stop_requested: str | None = None  # None, "warm" or "cold"
        self._announced_stop: str | None = None
        self.finished = False
        self._reserved: collections.deque[broker.Claimed] = collections.deque()
        self._next_poll = 0.0
        self._claim_now = True
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.listener = Listener(self.using, self.queues)

    # Life cycle.

    def start(self) -> None:
        """Load the task modules and start the pool."""
        broker.vendor(self.using)  # fail early on a database that cannot be a broker
        self.app.tasks  # autodiscovery happens before children are forked
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
        logger.info("%s ready.", self.hostname)
        try:
            while not self.finished:
                self.loop()
        finally:
            if self._reserved:  # only after an unexpected error: never keep claimed messages
                self._give_back_reserved()
            self.pool.stop()
            self.listener.close()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

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

    # One iteration.

    def loop(self) -> None:
        """Claim if there is room and it is time, dispatch, wait for outcomes, store them."""
        if self.stop_requested:
            self._shutdown_step()
            if self.finished:
                return
        elif self._claim_due():
            self._claim()
        self._dispatch()
        extra = [self._wake_r, *self.listener.waitables()]
        outcomes = self.pool.wait(self.listener.limit(self._wait_timeout()), extra=extra)
        self._drain_wakeups()
        if self.listener.heard():
            self._claim_now = True
        if outcomes:
            self.finish(outcomes)
            self._claim_now = True

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
        if self._capacity() > 0:
            if self._claim_now:
                return 0.0
            return max(0.0, self._next_poll - time.monotonic())
        return self.poll_interval

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # Claiming and dispatching.

    def _claim(self) -> None:
        limit = self._capacity()
        claimed = self._with_db_retry(
            lambda: broker.claim(self.using, self.queues, limit, self.hostname, LEASE_SECONDS)
        )
        self._claim_now = len(claimed) == limit
        self._next_poll = time.monotonic() + self.poll_interval
        if not claimed:  # idle: wake when the next delayed message is due, if that is sooner
            due = self._with_db_retry(lambda: broker.next_due(self.using, self.queues))
            if due is not None:
                self._next_poll = min(self._next_poll, time.monotonic() + due)
        refused: list[Outcome] = []
        registry = self.app.tasks
        for message in claimed:
            job = self.job_for(message)
            if message.task_name not in registry:
                logger.error(
                    "Received unregistered task of type %r.\nThe message has been set aside "
                    "(state 'rejected'), not run: did you import the module that defines it "
                    "(CELERY_IMPORTS, or a tasks.py in an installed app)?\nid: %s",
                    message.task_name, message.task_id,
                )
                refused.append(unrun(job, NotRegistered(message.task_name), self.result_serializer,
                                     action="reject"))
            elif message.expired:
                logger.info("Discarding expired task: %s[%s]", message.task_name, message.task_id)
                refused.append(unrun(job, TaskRevokedError("expired"), self.result_serializer,
                                     state=states.REVOKED))
            else:
                logger.info("Received task: %s[%s]", message.task_name, message.task_id)
                self._reserved.append(message)
        if refused:
            self.finish(refused, log=False)

    def job_for(self, message: broker.Claimed) -> Job:
        task = self.app.tasks.get(message.task_name)
        acks_late = bool(task.resolved("acks_late", "CELERY_ACKS_LATE")) if task else False
        return Job(
            message.id, message.task_id, message.task_name, message.queue, message.priority,
            message.content_type, message.body, message.retries, self.hostname, acks_late,
        )

    def _dispatch(self) -> None:
        if self.stop_requested:
            return
        count = min(self.pool.free_slots(), len(self._reserved))
        if count <= 0:
            return
        jobs = [self.job_for(self._reserved.popleft()) for _ in range(count)]
        started = [
            ResultRecord(job.task_id, states.STARTED, job.task_name, worker=self.hostname)
            for job in jobs
            if self.app.tasks[job.task_name].resolved("track_started", "CELERY_TRACK_STARTED")
        ]

        def mark_started() -> None:
            broker.start(self.using, [job.message_id for job in jobs])
            if started and self.backend.enabled:
                self.backend.store(started)

        self._with_db_retry(mark_started)
        for job in jobs:
            self.pool.submit(job)

    # Outcomes.

    def finish(self, outcomes: Sequence[Outcome], log: bool = True) -> None:
        """Store results and acknowledge, all in one transaction."""
        if log:
            for outcome in outcomes:
                self._log_outcome(outcome)
        now = timezone.now()
        records = [
            ResultRecord(
                o.job.task_id, o.state, o.job.task_name, o.content_type, o.result, o.traceback,
                o.args_repr, o.kwargs_repr, self.hostname, o.runtime, now,
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
                broker.ack(self.using, [o.job.message_id for o in by_action["ack"]])
                broker.requeue(self.using, [o.job.message_id for o in by_action["requeue"]])
                for outcome in by_action["reject"]:
                    broker.reject(self.using, [outcome.job.message_id], outcome.result_repr)

        self._with_db_retry(write)

    def _log_outcome(self, outcome: Outcome) -> None:
        name, task_id = outcome.job.task_name, outcome.job.task_id
        if outcome.state == states.SUCCESS:
            logger.info("Task %s[%s] succeeded in %.4fs: %s", name, task_id, outcome.runtime,
                        outcome.result_repr)
        elif outcome.action == "reject":
            logger.error("Can't decode message body of %s[%s]: %s\nThe message has been set "
                         "aside (state 'rejected'), not run.", name, task_id, outcome.result_repr)
        elif outcome.action == "requeue":
            logger.warning("Task %s[%s] was cut short (%s); acks_late: returned to the queue.",
                           name, task_id, outcome.result_repr)
        elif outcome.traceback:
            logger.error("Task %s[%s] raised unexpected: %s\n%s", name, task_id,
                         outcome.result_repr, outcome.traceback.rstrip())
        else:
            logger.error("Task handler raised error: %s (task %s[%s])", outcome.result_repr,
                         name, task_id)

    # Shutdown.

    def _shutdown_step(self) -> None:
        if self._announced_stop != self.stop_requested:
            self._announced_stop = self.stop_requested
            logger.warning("worker: %s shutdown (MainProcess)", self.stop_requested.title())
        if self._reserved:
            self._give_back_reserved()
        if self.stop_requested == "cold" and self.pool.running():
            self.finish(self.pool.terminate())
        if not self.pool.running():
            self.finished = True

    def _give_back_reserved(self) -> None:
        ids = [message.id for message in self._reserved]
        self._reserved.clear()
        count = self._with_db_retry(lambda: broker.requeue(self.using, ids))
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
