"""Execution pools: ``prefork`` (default), ``threads`` and ``solo``.

All three have the same shape: ``submit()`` hands over a job when ``free_slots()`` allows and
``wait()`` returns the outcomes that are ready, sleeping until one is (or an extra waitable, such as
the worker's signal wake-up socket, becomes readable). A pool child runs one job at a time, so the
worker always knows which message each child is running.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait as wait_ready
from typing import Any

from django.db import connections

from .execution import Job, Outcome, execute, lost, timed_out, unrun
from .exceptions import TaskRevokedError
from .revocation import signal_number
from . import states

logger = logging.getLogger("djqueue.pool")


class Pool:
    name = ""

    def __init__(
        self,
        concurrency: int,
        result_serializer: str = "json",
        *,
        max_tasks_per_child: int | None = None,
        fork_lock: threading.Lock | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.result_serializer = result_serializer
        self.max_tasks_per_child = max_tasks_per_child
        self.fork_lock = fork_lock or threading.Lock()

    def start(self) -> None:
        """Start the pool (after which the worker may submit jobs)."""

    def free_slots(self) -> int:
        raise NotImplementedError

    def submit(self, job: Job) -> None:
        raise NotImplementedError

    def wait(self, timeout: float | None, extra: Sequence[Any] = ()) -> list[Outcome]:
        raise NotImplementedError

    def running(self) -> list[Job]:
        raise NotImplementedError

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

    def free_slots(self) -> int:
        return 1

    def submit(self, job: Job) -> None:
        self._done.append(execute(job))

    def wait(self, timeout: float | None, extra: Sequence[Any] = ()) -> list[Outcome]:
        if not self._done and extra and (timeout is None or timeout > 0):
            wait_ready(list(extra), timeout)
        done, self._done = self._done, []
        return done

    def running(self) -> list[Job]:
        return []


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

    def submit(self, job: Job) -> None:
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
        return [lost(job, "Worker stopped (cold shutdown)", self.result_serializer) for job in jobs]


class _Child:
    __slots__ = ("process", "conn", "job", "deadline", "revoked")

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.job: Job | None = None
        self.deadline: float | None = None  # hard time limit of the running job
        self.revoked = False  # terminated on request (revoke with terminate=True)


def _child_main(
    conn: Connection, inherited: list[Connection], parent_pid: int, max_tasks: int | None
) -> None:
    """Body of a prefork child: run jobs sent over ``conn`` until told to stop."""
    # The worker process handles signals; a Ctrl-C sent to the whole process group must not kill
    # a task during a warm shutdown. SIGTERM keeps its default so the worker can stop a child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for other in inherited:  # ends that belong to the parent and the other children
        other.close()
    done = 0
    while max_tasks is None or done < max_tasks:
        if not conn.poll(1.0):
            if os.getppid() != parent_pid:
                break  # the worker died; do not linger as an orphan
            continue
        try:
            job = conn.recv()
        except EOFError:
            break
        if job is None:
            break
        conn.send(execute(job))
        done += 1
    connections.close_all()


class PreforkPool(Pool):
    """Runs jobs in forked child processes, each with its own database connection."""

    name = "prefork"

    def __init__(self, concurrency: int, result_serializer: str = "json", **options: Any) -> None:
        super().__init__(concurrency, result_serializer, **options)
        self._children: list[_Child] = []
        self._context = multiprocessing.get_context("fork")
        self._counter = 0

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._spawn()

    def _spawn(self) -> None:
        parent_end, child_end = self._context.Pipe()
        self._counter += 1
        inherited = [parent_end] + [child.conn for child in self._children]
        process = self._context.Process(
            target=_child_main,
            args=(child_end, inherited, os.getpid(), self.max_tasks_per_child),
            name=f"ForkPoolWorker-{self._counter}",
            daemon=True,
        )
        # A forked child must never share a database connection with the worker: close the
        # worker's, and hold the lock the heartbeat thread keeps while it has one open.
        with self.fork_lock:
            connections.close_all()
            process.start()
        child_end.close()
        self._children.append(_Child(process, parent_end))

    def free_slots(self) -> int:
        return max(0, sum(1 for child in self._children if child.job is None)
                   - max(0, len(self._children) - self.concurrency))

    def resize(self, concurrency: int) -> None:
        """Grow by forking children; shrink by stopping idle ones (busy ones once they finish)."""
        self.concurrency = concurrency
        for _ in range(concurrency - len(self._children)):
            self._spawn()
        self._retire_extra()

    def _retire_extra(self) -> None:
        for child in [c for c in self._children if c.job is None][:len(self._children) - self.concurrency]:
            self._children.remove(child)
            try:
                child.conn.send(None)
            except OSError:
                pass
            child.process.join(timeout=5)
            child.conn.close()

    def submit(self, job: Job) -> None:
        child = next(child for child in self._children if child.job is None)
        child.job = job
        child.deadline = time.monotonic() + job.time_limit if job.time_limit else None
        child.conn.send(job)

    def running(self) -> list[Job]:
        return [child.job for child in self._children if child.job is not None]

    def wait(self, timeout: float | None, extra: Sequence[Any] = ()) -> list[Outcome]:
        deadlines = [c.deadline for c in self._children if c.job is not None and c.deadline]
        if deadlines:
            until_first = max(0.0, min(deadlines) - time.monotonic())
            timeout = until_first if timeout is None else min(timeout, until_first)
        by_conn = {child.conn: child for child in self._children if child.job is not None}
        by_sentinel = {child.process.sentinel: child for child in self._children}
        ready = wait_ready([*by_conn, *by_sentinel, *extra], timeout)
        done: list[Outcome] = []
        for child in self._children:
            if child.conn in ready and child.job is not None:
                try:
                    done.append(child.conn.recv())
                    child.job = None
                except (EOFError, OSError):
                    pass  # died while answering: handled with the sentinel below
        now = time.monotonic()
        for child in self._children:
            if child.job is not None and child.deadline is not None and now >= child.deadline:
                logger.error("Hard time limit (%ss) exceeded for %s[%s]", child.job.time_limit,
                             child.job.task_name, child.job.task_id)
                child.process.kill()
                child.process.join()
                done.append(timed_out(child.job, self.result_serializer))
                child.job = None
        dead = [c for c in self._children if c.process.sentinel in ready or not c.process.is_alive()]
        for child in dead:
            child.process.join()
            if child.job is not None:
                done.append(self._cut_short(child))
            child.conn.close()
            self._children.remove(child)
            self._spawn()
        self._retire_extra()
        return done

    def _cut_short(self, child: _Child) -> Outcome:
        assert child.job is not None
        reason = _describe_exit(child.process.exitcode)
        if child.revoked:
            return unrun(child.job, TaskRevokedError(f"terminated ({reason})"),
                         self.result_serializer, state=states.REVOKED)
        logger.error("Process %r pid:%s exited with %s", child.process.name,
                     child.process.pid, reason)
        return lost(child.job, f"Worker exited prematurely: {reason}.", self.result_serializer)

    def terminate_job(self, message_id: int, signame: str) -> bool:
        for child in self._children:
            if child.job is not None and child.job.message_id == message_id:
                child.revoked = True
                os.kill(child.process.pid, signal_number(signame))
                return True
        return False

    def stop(self) -> None:
        for child in self._children:
            try:
                child.conn.send(None)
            except OSError:
                pass
        for child in self._children:
            child.process.join(timeout=5)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
            child.conn.close()
        self._children = []

    def terminate(self) -> list[Outcome]:
        done = []
        for child in self._children:
            if child.process.is_alive():
                child.process.terminate()
        for child in self._children:
            child.process.join(timeout=5)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
            if child.job is not None:
                done.append(lost(child.job, "Worker stopped (cold shutdown): "
                                 + _describe_exit(child.process.exitcode) + ".",
                                 self.result_serializer))
                child.job = None
            child.conn.close()
        self._children = []
        return done


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {-code} ({signal.Signals(-code).name})"
    return f"exitcode {code}"


POOLS: dict[str, type[Pool]] = {cls.name: cls for cls in (PreforkPool, ThreadPool, SoloPool)}
