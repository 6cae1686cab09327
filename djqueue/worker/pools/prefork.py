"""The ``prefork`` pool (the default): jobs run in forked child processes, each with its own
database connection.

A child may be sent several short jobs at once (see :class:`_PreforkPlan`): the worker then pays
one round trip to the database for many tasks. The child answers each job with its outcome as it
finishes, so the worker always knows which job each child is running, and gives back the jobs a
child that died had not begun.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from multiprocessing.connection import wait as wait_ready
from typing import Any

from django.db import connections

from ... import states
from ...client.revocation import signal_number
from ...exceptions import TaskRevokedError
from ..execution import (
    Job, Outcome, job_to_wire, lost, outcome_from_wire, released, timed_out, unrun,
)
from . import together
from .base import Plan, Pool
from .child import Child, child_main, describe_exit

logger = logging.getLogger("djqueue.pool")

#: Seconds of work a prefork child is assumed to need per job beyond the task's own run time
#: (decoding, storing the outcome, the pipe), when sizing its queue.
JOB_OVERHEAD = 0.0001
#: The most jobs a child has queued at once, whatever their expected run time.
MAX_CHILD_QUEUE = 256


class _PreforkPlan(Plan):
    """Gives each job to an idle child, or queues it behind a busy child's jobs while that
    child's expected work stays within the pool's batch window.

    A job whose task has no known run time yet only goes to an idle child, so slow tasks never
    wait behind others and are started one at a time, exactly when a process is free.
    """

    def __init__(self, pool: PreforkPool) -> None:
        super().__init__(0)
        self.pool = pool
        # A child running coroutines together takes nothing more until they are all done.
        self.children = [c for c in pool._usable_children() if not c.together]
        self.count = {id(c): len(c.jobs) for c in self.children}
        self.work = {id(c): c.work for c in self.children}
        self.assigned: list[tuple[Child, Job, float]] = []
        self._chosen: tuple[Child, float] | None = None
        self.together: dict[int, str] = {}  # children given coroutines to run at once

    def fits(self, task_name: str) -> bool:
        self._chosen = None
        expected = self.pool.expected(task_name)
        candidates = self._open()
        if self.pool.runs_together.of(task_name) > 1:
            self._chosen = together.child_for(self, task_name, candidates)
            return self._chosen is not None
        idle = [c for c in candidates if self.count[id(c)] == 0]
        if idle:
            self._chosen = (idle[0], expected if expected is not None else self.pool.batch_window)
        elif expected is not None and candidates:
            child = min(candidates, key=lambda c: self.work[id(c)])
            if (self.work[id(child)] + expected <= self.pool.batch_window
                    and self.count[id(child)] < MAX_CHILD_QUEUE):
                self._chosen = (child, expected)
        return self._chosen is not None

    def _open(self) -> list[Child]:
        """Children that may be given another job besides coroutines to run together."""
        return [c for c in self.children if self.pool._budget(c) > self._planned(c)
                and id(c) not in self.together]

    def _planned(self, child: Child) -> int:
        return self.count[id(child)] - len(child.jobs)

    def force(self, job: Job) -> None:
        if not self.fits(job.task_name):
            candidates = self._open()
            child = min(candidates or self.children, key=lambda c: self.work[id(c)])
            self._chosen = (child, self.pool.expected(job.task_name) or self.pool.batch_window)
        self.take(job)

    def room(self) -> tuple[int, int]:
        candidates = self._open()
        idle = sum(1 for c in candidates if self.count[id(c)] == 0)
        typical = self.pool._typical
        if not typical or self.pool.batch_window <= 0:
            return idle, 0
        fit = sum(max(0, min(MAX_CHILD_QUEUE - self.count[id(c)],
                             int((self.pool.batch_window - self.work[id(c)]) / typical)))
                  for c in candidates)
        return idle, max(0, fit - idle)

    def discard(self, message_ids: set[int]) -> None:
        super().discard(message_ids)
        self.assigned = [a for a in self.assigned if a[1].message_id not in message_ids]

    def take(self, job: Job) -> None:
        assert self._chosen is not None, "take() follows a fits() that said yes"
        child, expected = self._chosen
        self._chosen = None
        if self.pool.runs_together.of(job.task_name) > 1 and (
                not self.count[id(child)] or id(child) in self.together):
            self.together[id(child)] = job.task_name
        self.count[id(child)] += 1
        self.work[id(child)] += expected
        self.assigned.append((child, job, expected))
        self.jobs.append(job)


class PreforkPool(Pool):
    """Runs jobs in forked child processes."""

    name = "prefork"

    def __init__(self, concurrency: int, result_serializer: str = "json", **options: Any) -> None:
        super().__init__(concurrency, result_serializer, **options)
        self._children: list[Child] = []
        self._context = multiprocessing.get_context("fork")
        self._counter = 0
        self._expected: dict[str, float] = {}  # task name -> expected seconds per job
        self._typical: float | None = None  # expected seconds of a recent job, any task
        #: Outcomes of jobs that could not be sent to their child (it had died): wait() returns them.
        self._undelivered: list[Outcome] = []
        self.runs_together = together.Concurrency()  # coroutines a child runs at once, per task

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._spawn()

    def _spawn(self) -> None:
        parent_end, child_end = self._context.Pipe()
        self._counter += 1
        inherited = [parent_end] + [child.conn for child in self._children]
        process = self._context.Process(
            target=child_main,
            args=(child_end, inherited, os.getpid(), self.max_tasks_per_child),
            name=f"ForkPoolWorker-{self._counter}",
            daemon=True,
        )
        # A forked child must never share a database connection with the worker: close the
        # worker's, and hold the lock the heartbeat thread keeps while it has one open.
        with self.fork_lock:
            connections.close_all()
            # What exists now is shared with the child page by page until written; the child's
            # garbage collector would write to every object it looks at. Frozen objects are
            # never looked at, so the pages stay shared.
            gc.freeze()
            process.start()
        child_end.close()
        self._children.append(Child(process, parent_end))

    # Planning.

    def expected(self, task_name: str) -> float | None:
        """Seconds a job of ``task_name`` is expected to take in a child; None if unknown or
        when batching is off (a zero window)."""
        if self.batch_window <= 0:
            return None
        return self._expected.get(task_name)

    def short_names(self) -> list[str]:
        if self.batch_window <= 0:
            return []
        return [name for name, seconds in self._expected.items()
                if seconds <= self.batch_window / 2]

    def _learn(self, outcome: Outcome) -> None:
        seconds = outcome.runtime + JOB_OVERHEAD
        name = outcome.job.task_name
        previous = self._expected.get(name)
        self._expected[name] = seconds if previous is None else 0.8 * previous + 0.2 * seconds
        self._typical = seconds if self._typical is None else 0.8 * self._typical + 0.2 * seconds

    def _budget(self, child: Child) -> int:
        """How many more jobs the child may be sent before it retires (max_tasks_per_child)."""
        if self.max_tasks_per_child is None:
            return MAX_CHILD_QUEUE
        return self.max_tasks_per_child - child.sent

    def _usable_children(self) -> list[Child]:
        """Busy children, then idle ones up to the concurrency (extra idle ones are retiring)."""
        busy = [c for c in self._children if c.jobs]
        idle = [c for c in self._children if not c.jobs]
        return busy + idle[:max(0, self.concurrency - len(busy))]

    def plan(self) -> Plan:
        return _PreforkPlan(self)

    def spare(self) -> int:
        batches = self.runs_together.spare(len(self._usable_children()))
        if batches:
            return batches
        if self.batch_window <= 0 or not self._typical:
            return 0
        fit = min(MAX_CHILD_QUEUE, int(self.batch_window / self._typical))
        return max(0, fit - 1) * len(self._usable_children())

    def submit(self, plan: Plan) -> None:
        assert isinstance(plan, _PreforkPlan)
        batches: dict[int, list[tuple[Any, ...]]] = {}
        now = time.monotonic()
        for child, job, expected in plan.assigned:
            if not child.jobs:
                child.began = now
            child.jobs.append(job)
            child.expected.append(expected)
            child.work += expected
            child.sent += 1
            batches.setdefault(id(child), []).append(job_to_wire(job))
        for child in self._children:
            if id(child) in plan.together:
                child.together = True
            if id(child) in batches:
                try:
                    child.conn.send(batches[id(child)])
                except OSError:  # it died since the plan: wait() replaces it
                    self._undelivered.extend(self._unsent(child, len(batches[id(child)])))

    def _unsent(self, child: Child, count: int) -> list[Outcome]:
        """Take back the last ``count`` jobs given to ``child``, which it never received: they
        go back to the queue (``released``), not to the child's account."""
        jobs = []
        for _ in range(count):
            jobs.append(child.jobs.pop())
            child.work -= child.expected.pop()
            child.sent -= 1
        logger.warning("Process %r pid:%s is gone; %d job(s) it never received go back to the "
                       "queue.", child.process.name, child.process.pid, count)
        return [released(job, self.result_serializer) for job in reversed(jobs)]

    def resize(self, concurrency: int) -> None:
        """Grow by forking children; shrink by stopping idle ones (busy ones once they finish)."""
        self.concurrency = concurrency
        for _ in range(concurrency - len(self._children)):
            self._spawn()
        self._retire_extra()

    def _retire_extra(self) -> None:
        for child in [c for c in self._children if not c.jobs][:len(self._children) - self.concurrency]:
            self._children.remove(child)
            try:
                child.conn.send(None)
            except OSError:
                pass
            child.process.join(timeout=5)
            child.conn.close()

    def running(self) -> list[Job]:
        return [job for child in list(self._children) for job in list(child.jobs)]

    def held(self) -> list[int]:
        """The running jobs, and those a dead child never received, which :meth:`wait` hands
        back next."""
        return [*super().held(), *(outcome.job.message_id for outcome in list(self._undelivered))]

    def processes(self) -> list[int]:
        return [child.process.pid for child in list(self._children) if child.process.pid]

    def job_pids(self) -> dict[int, int]:
        return {job.message_id: child.process.pid for child in list(self._children)
                for job in list(child.jobs) if child.process.pid}

    # Outcomes.

    def _finished(self, child: Child, outcome: Outcome) -> None:
        child.jobs.popleft()
        child.work -= child.expected.popleft()
        if not child.together:
            child.began = time.monotonic()
        elif not child.jobs:
            child.together = False
        self._learn(outcome)

    def _read(self, child: Child, done: list[Outcome]) -> None:
        """Every outcome the child has sent so far."""
        try:
            while child.jobs and child.conn.poll(0):
                outcome = outcome_from_wire(child.jobs[0], child.conn.recv())
                self._finished(child, outcome)
                done.append(outcome)
        except (EOFError, OSError):
            pass  # died while answering: handled with the sentinel

    def wait(self, timeout: float | None, extra: Sequence[Any] = ()) -> list[Outcome]:
        done, self._undelivered = self._undelivered, []
        if done:
            timeout = 0.0
        deadlines = [d for c in self._children if (d := c.deadline()) is not None]
        if deadlines:
            until_first = max(0.0, min(deadlines) - time.monotonic())
            timeout = until_first if timeout is None else min(timeout, until_first)
        by_conn = {child.conn: child for child in self._children if child.jobs}
        by_sentinel = {child.process.sentinel: child for child in self._children}
        ready = wait_ready([*by_conn, *by_sentinel, *extra], timeout)
        for child in self._children:
            if child.conn in ready:
                self._read(child, done)
        now = time.monotonic()
        for child in self._children:
            deadline = child.deadline()
            if deadline is not None and now >= deadline:
                job = child.jobs[0]
                logger.error("Hard time limit (%ss) exceeded for %s[%s]", job.time_limit,
                             job.shown_name, job.task_id)
                child.process.kill()
                child.process.join()
                self._read(child, done)
                if child.jobs and child.jobs[0] is job:
                    done.append(timed_out(job, self.result_serializer))
                    done.extend(self._not_begun(child, 1))
        dead = [c for c in self._children if c.process.sentinel in ready or not c.process.is_alive()]
        for child in dead:
            child.process.join()
            self._read(child, done)
            if child.jobs:
                done.append(self._cut_short(child))
                done.extend(self._not_begun(child, 1))
            child.conn.close()
            self._children.remove(child)
            self._spawn()
        self._retire_extra()
        return done

    def _not_begun(self, child: Child, skip: int) -> list[Outcome]:
        """Give back the child's queued jobs after the first ``skip``: they never began
        (coroutines run together all began: they are lost with the first)."""
        jobs = list(child.jobs)[skip:]
        first = child.jobs[0] if child.jobs else None
        child.jobs.clear()
        child.expected.clear()
        child.work = 0.0
        if child.together and first is not None:
            child.together = False
            return [lost(job, f"Worker exited prematurely while running it beside {first.task_name}"
                         f"[{first.task_id}].", self.result_serializer, self.max_deliveries)
                    for job in jobs]
        return [released(job, self.result_serializer) for job in jobs]

    def _cut_short(self, child: Child) -> Outcome:
        job = child.jobs[0]
        reason = describe_exit(child.process.exitcode)
        if child.revoked:
            child.revoked = False
            return unrun(job, TaskRevokedError(f"terminated ({reason})"),
                         self.result_serializer, state=states.REVOKED)
        logger.error("Process %r pid:%s exited with %s", child.process.name,
                     child.process.pid, reason)
        return lost(job, f"Worker exited prematurely: {reason}.", self.result_serializer,
                    self.max_deliveries)

    def terminate_job(self, message_id: int, signame: str) -> bool:
        for child in self._children:
            if child.together and any(job.message_id == message_id for job in child.jobs):
                try:  # that coroutine alone is cancelled (pools/together.py)
                    child.conn.send(("revoke", message_id))
                except OSError:
                    return False
                return True
            if child.jobs and child.jobs[0].message_id == message_id:
                child.revoked = True
                try:
                    os.kill(child.process.pid, signal_number(signame, default=signal.SIGTERM))
                except ProcessLookupError:  # it died meanwhile: wait() reports its job as lost
                    child.revoked = False
                    return False
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
        done: list[Outcome] = []
        for child in self._children:
            if child.process.is_alive():
                child.process.terminate()
        for child in self._children:
            child.process.join(timeout=5)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
            self._read(child, done)
            if child.jobs:
                done.append(lost(child.jobs[0], "Worker stopped (cold shutdown): "
                                 + describe_exit(child.process.exitcode) + ".",
                                 self.result_serializer, self.max_deliveries))
                done.extend(self._not_begun(child, 1))
            child.conn.close()
        self._children = []
        return done
