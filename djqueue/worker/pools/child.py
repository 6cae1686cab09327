"""A prefork child: the worker's record of one (:class:`Child`) and the loop it runs
(:func:`child_main`)."""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection

from django.db import close_old_connections, connections

from ... import signals
from .. import coroutines
from ..execution import Job, execute, job_from_wire, outcome_to_wire
from . import together


class Child:
    __slots__ = ("process", "conn", "jobs", "expected", "work", "began", "sent", "revoked",
                 "together")

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        #: Jobs sent and not finished, in the order the child runs them: ``jobs[0]`` is running.
        self.jobs: collections.deque[Job] = collections.deque()
        self.expected: collections.deque[float] = collections.deque()  # seconds, per job
        self.work = 0.0  # sum of ``expected``
        self.began = 0.0  # when jobs[0] began (monotonic)
        self.sent = 0  # jobs sent over the child's life (for max_tasks_per_child)
        self.revoked = False  # terminated on request (revoke with terminate=True)
        #: Its jobs are coroutines running at once (pools/together.py): all began with the batch.
        self.together = False

    def deadline(self) -> float | None:
        """When the running job reaches its hard time limit, plus, for coroutines, the grace
        their loop has to cancel them itself (run together: when the first of them does)."""
        if self.together:
            limits = [job.time_limit for job in self.jobs if job.time_limit]
            return self.began + min(limits) + coroutines.HARD_LIMIT_GRACE if limits else None
        if self.jobs and self.jobs[0].time_limit:
            return self.began + self.jobs[0].time_limit + coroutines.grace(self.jobs[0].task_name)
        return None


def child_main(
    conn: Connection, inherited: list[Connection], parent_pid: int, max_tasks: int | None
) -> None:
    """Body of a prefork child: run the jobs sent over ``conn``, in order, answering each with
    its outcome, until told to stop."""
    # The worker process handles signals; a Ctrl-C sent to the whole process group must not kill
    # a task during a warm shutdown. SIGTERM keeps its default so the worker can stop a child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for other in inherited:  # ends that belong to the parent and the other children
        other.close()
    signals.worker_process_init.send(sender=None)
    done = 0
    while max_tasks is None or done < max_tasks:
        if not conn.poll(1.0):
            if os.getppid() != parent_pid:
                break  # the worker died; do not linger as an orphan
            continue
        try:
            jobs = conn.recv()
        except (EOFError, OSError):
            break  # the worker is gone
        if jobs is None:
            break
        if together.is_revoke(jobs):  # for a coroutine that finished meanwhile
            continue
        try:
            if together.runs_together(jobs):
                together.run_together(jobs, conn)
            else:
                for fields in jobs:
                    conn.send(outcome_to_wire(execute(job_from_wire(fields))))
        except OSError:
            break  # the worker is gone (its end of the pipe closed): nobody to answer
        finally:
            # As Django does after a request (and Celery after a task): a connection the tasks
            # opened is kept only for CONN_MAX_AGE, so an idle child holds none by default.
            close_old_connections()
        done += len(jobs)
    signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
    connections.close_all()



def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {-code} ({signal.Signals(-code).name})"
    return f"exitcode {code}"
