"""The worker as a process: its settings, registration, signals, start and shutdown, and the
seam remote-control handlers use. The iteration itself (rounds, planning, revocations) is
:class:`djqueue.worker.loop.Worker`, which builds on this."""

from __future__ import annotations

import abc
import collections
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.functions import Now

from .. import signals
from ..broker import operations
from ..broker.rows import Claimed
from ..broker.listen import Listener
from ..client import routing
from ..client.base import App
from ..exceptions import ImproperlyConfigured
from ..models import WorkerNode
from . import heartbeat
from .control import ControlPanel
from .events import Events
from .execution import Outcome
from .expiry import PeriodicCleanup
from . import limits
from .options import TaskOptions
from .pools import POOLS, Pool
from .settle import Settler, with_db_retry
from .tally import Tally
from .throttle import Throttle

logger = logging.getLogger("djqueue.worker")

T = TypeVar("T")


def default_hostname(template: str | None = None) -> str:
    """Expand Celery's ``%h`` (host), ``%n`` (host name) and ``%d`` (domain) in a node name."""
    host = socket.getfqdn() or socket.gethostname()
    name, _, domain = host.partition(".")
    template = template or "celery@%h"
    return template.replace("%h", host).replace("%n", name).replace("%d", domain)


class Lifecycle(abc.ABC):
    """Everything of a worker but its iteration."""

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
        self.hostname = default_hostname(hostname)
        signals.celeryd_init.send(sender=self.hostname, instance=self, conf=conf, options={
            "queues": queues, "concurrency": concurrency, "pool": pool, "hostname": hostname,
            "prefetch_multiplier": prefetch_multiplier, "poll_interval": poll_interval,
            "time_limit": time_limit, "soft_time_limit": soft_time_limit,
            "max_tasks_per_child": max_tasks_per_child})
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
        multiplier = (
            conf.CELERYD_PREFETCH_MULTIPLIER if prefetch_multiplier is None else prefetch_multiplier
        )
        self.prefetch_limit = self.concurrency * max(int(multiplier), 1)
        if poll_interval is None:
            poll_interval = conf.polling_interval
        self.poll_interval = (operations(self.using).polling_interval if poll_interval is None
                              else poll_interval)
        self.time_limit = conf.CELERYD_TASK_TIME_LIMIT if time_limit is None else time_limit
        self.soft_time_limit = (
            conf.CELERYD_TASK_SOFT_TIME_LIMIT if soft_time_limit is None else soft_time_limit
        )
        self.heartbeat_timeout = float(conf.DJQUEUE_WORKER_LOST_TIMEOUT)
        self.max_deliveries: int | None = conf.DJQUEUE_MAX_DELIVERIES or None
        self.result_serializer = conf.CELERY_RESULT_SERIALIZER
        self.fork_lock = threading.Lock()
        # Held by the loop while it uses the database, and by the heartbeat thread while it uses
        # the same connection (see heartbeat.Heartbeat); taken before fork_lock, never after.
        self.db_lock = threading.RLock()
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
        self.paused: frozenset[str] = frozenset()  # queues not claimed from (djqueue.flow)
        self.options = TaskOptions(app, self.throttle, self.time_limit, self.soft_time_limit)
        self.cleanup = PeriodicCleanup(app)
        self.tally = Tally(conf.DJQUEUE_STATS_RETENTION, conf.DJQUEUE_WORKER_FORGET_AFTER)
        self.settler = Settler(self.using, self.backend, self.hostname, self.result_serializer,
                               self.heartbeat_timeout)
        self.node_id: int | None = None
        self.created = time.monotonic()
        self.processed = 0
        #: Tasks handed to the pool since the start, by name (``inspect stats``' ``total``).
        self.total: collections.Counter[str] = collections.Counter()
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
        self.listener = Listener(self.using, self.queues, conf.DJQUEUE_LISTEN_DATABASE)
        self.events = Events(self)
        self._stop_signal: str | None = None
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=conf)

    # Life cycle.

    def start(self) -> None:
        """Load the task modules, register this worker and start the pool."""
        signals.worker_init.send(sender=self)
        broker = operations(self.using)  # fail early on a database that cannot be a broker
        if self.pool_name == "prefork":  # only djqueue's statements run in this process
            broker.steer_worker_planner([threading.main_thread().name, heartbeat.THREAD_NAME])
        self.app.tasks  # autodiscovery happens before children are forked
        self.throttle.validate()
        limits.validate(self.app)
        self.node_id = self.settler.owner = self.with_db_retry(lambda: heartbeat.register(self))
        self.with_db_retry(self._control.start)
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
        self._heartbeat = heartbeat.Heartbeat(self, self.fork_lock, self.db_lock,
                                              self._lent_connection())
        self._heartbeat.start()
        logger.info("%s ready.", self.hostname)
        signals.worker_ready.send(sender=self)
        self.events.online()
        try:
            while not self.finished:
                self.loop()
        finally:
            with self.db_lock:  # the heartbeat still beats on the same connection
                if self._reserved:  # only after an unexpected error: never keep claimed messages
                    self._give_back_reserved()
                if self._pending:
                    self.finish(self._pending, log=False)
            self.pool.stop()
            self._heartbeat.stop()
            self.with_db_retry(self._mark_stopped)
            self.events.offline()
            self.listener.close()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signals.worker_shutdown.send(sender=self)

    def _lent_connection(self) -> BaseDatabaseWrapper | None:
        """The loop's connection, for the heartbeat thread to use in turn (one connection for
        both); None with the ``solo`` pool, whose tasks use it while the heartbeat must go on."""
        if self.pool_name == "solo":
            return None
        connection = connections[self.using]
        connection.inc_thread_sharing()
        return connection

    def _mark_stopped(self) -> None:
        self.tally.flush(self.using, self.node_id or 0)
        WorkerNode.objects.using(self.using).filter(pk=self.node_id).update(
            stopped_at=Now(), processed=self.processed, active="[]"
        )

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop_signal = signal.Signals(signum).name
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

    def held_ids(self) -> list[int]:
        """The messages this worker knows it holds: reserved, in the pool (running, or finished
        and not yet collected) and finished awaiting the next round. The heartbeat extends the
        leases of these only; it reads them on its thread under ``db_lock``, so never in the
        middle of a round. An outcome between the pool's ``wait`` and the loop's lock is in
        none of them for that moment: it misses at most one beat, and its lease, extended at the
        beat before, has nearly the whole timeout left."""
        return [*(message.id for message in list(self._reserved)), *self.pool.held(),
                *(outcome.job.message_id for outcome in list(self._pending))]

    # What remote-control handlers (djqueue/worker/control.py) may read and change.

    def reserved_messages(self) -> list[Claimed]:
        """The messages this worker holds and has not handed to its pool yet."""
        return list(self._reserved)

    def check_revocations_soon(self) -> None:
        """Look at revocations of what this worker holds in this iteration, not a second later."""
        self._next_revocation_check = 0.0

    def consume(self, queue: str) -> bool:
        """Claim from ``queue`` too, from this iteration on; False if it already does."""
        if queue in self.queues:
            return False
        self.queues.append(queue)
        self._claim_now = True
        return True

    def claim_queues(self) -> list[str]:
        """The queues this worker claims from now: its queues but the paused ones."""
        if not self.paused:
            return self.queues
        return [queue for queue in self.queues if queue not in self.paused]

    def pause(self, paused: frozenset[str]) -> int:
        """Claim from none of the ``paused`` queues from now on; the messages of those queues
        this worker reserved go back to the queue at once. Returns how many went back."""
        self.paused = paused
        self._claim_now = True
        back = [message for message in self._reserved if message.queue in paused]
        if not back:
            return 0
        self._reserved = collections.deque(m for m in self._reserved if m.queue not in paused)
        return self._give_back([message.id for message in back])

    def resize(self, concurrency: int) -> None:
        """Run up to ``concurrency`` tasks at once (the prefetch limit follows); raises
        NotImplementedError for a pool that cannot be resized."""
        self.pool.resize(concurrency)
        multiplier = self.prefetch_limit // self.concurrency
        self.concurrency = concurrency
        self.prefetch_limit = concurrency * multiplier

    def uptime(self) -> float:
        """Seconds since this worker was created."""
        return time.monotonic() - self.created

    @abc.abstractmethod
    def loop(self) -> None:
        """One iteration (a round, then a wait)."""

    @abc.abstractmethod
    def finish(self, outcomes: Sequence[Outcome], log: bool = True) -> None:
        """Settle ``outcomes`` now."""

    # Shutdown.

    def _shutdown_step(self) -> None:
        if self._announced_stop != self.stop_requested:
            self._announced_stop = self.stop_requested
            logger.warning("worker: %s shutdown (MainProcess)", (self.stop_requested or "").title())
            signals.worker_shutting_down.send(sender=self.hostname, sig=self._stop_signal,
                                              how=(self.stop_requested or "").title(), exitcode=0)
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
        self._give_back(ids)

    def _give_back(self, ids: list[int]) -> int:
        count = len(self.with_db_retry(lambda: operations(self.using).requeue(ids, self.node_id)))
        logger.info("Returned %d reserved message(s) to the queue.", count)
        return count

    # Database faults.

    def with_db_retry(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` until the database answers (see :func:`settle.with_db_retry`):
        nothing the worker holds is dropped while the database is away."""
        return with_db_retry(self.using, operation)
