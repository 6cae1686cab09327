"""The pool interface, and the two pools that run jobs in the worker process itself: ``solo``
and ``threads`` (``prefork``, the default, is in :mod:`djqueue.worker.pools.prefork`).

Every pool has the same shape: each round the worker asks for a :class:`Plan`, fills it with the
jobs the pool agrees to take, marks their messages started, and hands the plan to ``submit()``;
``wait()`` returns the outcomes that are ready, sleeping until one is (or an extra waitable, such
as the worker's signal wake-up socket, becomes readable).
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import socket
import threading
from collections.abc import Sequence
from multiprocessing.connection import wait as wait_ready
from typing import Any

from django.db import connections

from ... import signals
from ..execution import Job, Outcome, execute, lost

logger = logging.getLogger("djqueue.pool")


class Plan:
    """The jobs a pool agrees to take in one round, before they are marked started.

    The worker asks :meth:`fits` for the next message's task, then :meth:`take` to accept its job; once
    the round has marked them started it hands the plan to :meth:`Pool.submit`.
    """

    def __init__(self, free: int) -> None:
        self.free = free
        self.jobs: list[Job] = []

    def fits(self, task_name: str) -> bool:
        return len(self.jobs) < self.free

    def take(self, job: Job) -> None:
        self.jobs.append(job)

    def force(self, job: Job) -> None:
        """Take a job already marked started (by the claim), room or not."""
        self.jobs.append(job)

    def discard(self, message_ids: set[int]) -> None:
        """Drop the jobs of these messages again (their start was not confirmed)."""
        self.jobs = [job for job in self.jobs if job.message_id not in message_ids]

    def room(self) -> tuple[int, int]:
        """After the jobs taken so far: how many idle processes are left, and how many short
        jobs could be queued behind running ones besides (what a claim may start at once)."""
        return max(0, self.free - len(self.jobs)), 0


class Pool:
    name = ""

    def __init__(
        self,
        concurrency: int,
        result_serializer: str = "json",
        *,
        max_tasks_per_child: int | None = None,
        fork_lock: threading.Lock | None = None,
        batch_window: float = 0.0,
        max_deliveries: int | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.result_serializer = result_serializer
        self.max_tasks_per_child = max_tasks_per_child
        self.fork_lock = fork_lock or threading.Lock()
        self.batch_window = batch_window
        self.max_deliveries = max_deliveries  # see execution.lost

    def start(self) -> None:
        """Start the pool (after which the worker may submit jobs)."""

    def free_slots(self) -> int:
        raise NotImplementedError

    def plan(self) -> Plan:
        """A plan for this round: one job per free slot."""
        return Plan(self.free_slots())

    def short_names(self) -> list[str]:
        """Tasks known to be short enough to queue behind another job in one process."""
        return []

    def spare(self) -> int:
        """How many jobs beyond one per process the pool can hold, whatever it holds now: the
        worker's capacity is its prefetch limit plus this, and the jobs the pool has count
        against it once (counting them here too had kept a batching pool's queues half empty)."""
        return 0

    def submit(self, plan: Plan) -> None:
        raise NotImplementedError

    def wait(self, timeout: float | None, extra: Sequence[Any] = ()) -> list[Outcome]:
        raise NotImplementedError

    def running(self) -> list[Job]:
        """Jobs handed to the pool and not finished (their messages are marked started)."""
        raise NotImplementedError

    def held(self) -> list[int]:
        """The message ids of the jobs the pool has not handed back through :meth:`wait`: the
        running ones, by default (read from the heartbeat's thread)."""
        return [job.message_id for job in self.running()]

    def processes(self) -> list[int]:
        """The ids of the processes that run jobs: this one, unless the pool forks."""
        return [os.getpid()]

    def job_pids(self) -> dict[int, int]:
        """The process running each running job, by message id (``inspect active``)."""
        return {job.message_id: os.getpid() for job in self.running()}

    def stop(self) -> None:
        """Stop idle children; called when nothing is running any more."""

    def terminate(self) -> list[Outcome]:
        """Stop now; return the outcomes of jobs that were cut short."""
        return []

    def resize(self, concurrency: int) -> None:
        """Run up to ``concurrency`` jobs at once from now on (``pool_grow``/``pool_shrink``)."""
        raise NotImplementedError(f"the {self.name} pool cannot be resized")

    def terminate_job(self, message_id: int, signame: str) -> bool:
        """Stop one running job (a revoke with ``terminate=True``); False if this pool cannot."""
        logger.warning("The %s pool cannot terminate a running task; it will run to its end.",
                       self.name)
        return False


class SoloPool(Pool):
    """Runs each job inline, in the worker process itself."""

    name = "solo"

    def __init__(self, concurrency: int = 1, result_serializer: str = "json", **options: Any) -> None:
        super().__init__(1, result_serializer, **options)
        self._done: list[Outcome] = []

    def start(self) -> None:
        signals.worker_process_init.send(sender=None)  # the worker is the pool process

    def free_slots(self) -> int:
        return 1

    def submit(self, plan: Plan) -> None:
        self._done.extend(execute(job) for job in plan.jobs)

    def wait(self, timeout: float | None, extra: Sequence[Any] = ()) -> list[Outcome]:
        if not self._done and extra and (timeout is None or timeout > 0):
            wait_ready(list(extra), timeout)
        done, self._done = self._done, []
        return done

    def running(self) -> list[Job]:
        return []

    def held(self) -> list[int]:
        """Its jobs ran inline, under the loop's ``db_lock``; their outcomes wait for
        :meth:`wait`, and their messages are still held."""
        return [outcome.job.message_id for outcome in list(self._done)]


class ThreadPool(Pool):
    """Runs jobs in threads of the worker process (each with its own database connection)."""

    name = "threads"

    def __init__(self, concurrency: int, result_serializer: str = "json", **options: Any) -> None:
        super().__init__(concurrency, result_serializer, **options)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._done: collections.deque[Outcome] = collections.deque()
        self._running: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._add_threads(self.concurrency)

    def _add_threads(self, count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(
                target=self._run, name=f"ThreadPoolWorker-{len(self._threads) + 1}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def resize(self, concurrency: int) -> None:
        """Grow with new threads; shrink by letting idle threads exit (busy ones finish first)."""
        with self._lock:
            change, self.concurrency = concurrency - self.concurrency, concurrency
        if change > 0:
            self._add_threads(change)
        for _ in range(-change):
            self._jobs.put(None)

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                outcome = execute(job)
                self._done.append(outcome)
                self._wake_w.send(b"x")
        finally:
            connections.close_all()

    def free_slots(self) -> int:
        with self._lock:
            return self.concurrency - len(self._running)

    def submit(self, plan: Plan) -> None:
        for job in plan.jobs:
            with self._lock:
                self._running[job.message_id] = job
            self._jobs.put(job)

    def wait(self, timeout: float | None, extra: Sequence[Any] = ()) -> list[Outcome]:
        if not self._done:
            wait_ready([self._wake_r, *extra], timeout)
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        done = []
        while self._done:
            outcome = self._done.popleft()
            with self._lock:
                self._running.pop(outcome.job.message_id, None)
            done.append(outcome)
        return done

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running.values())

    def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def terminate(self) -> list[Outcome]:
        # Threads cannot be killed: their jobs are reported lost and the process exits under them.
        with self._lock:
            jobs, self._running = list(self._running.values()), {}
        return [lost(job, "Worker stopped (cold shutdown)", self.result_serializer,
                     self.max_deliveries) for job in jobs]
