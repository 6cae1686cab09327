"""A prefork child's batch of coroutine messages, run at once (see
:mod:`djqueue.worker.coroutines`): each message's ``execute`` in a thread of a per-process
executor, their coroutines together on the process's event loop, the outcomes sent in the batch's
order (the order the worker expects them). While a batch runs the child listens to its pipe,
where the worker sends ``("revoke", message_id)`` for ``revoke(terminate=True)``: that coroutine
is cancelled, the others go on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ... import states
from ...client.base import app
from ...exceptions import TaskRevokedError
from .. import coroutines
from ..execution import Job, execute, job_from_wire, outcome_to_wire, unrun

if TYPE_CHECKING:
    from .child import Child

logger = logging.getLogger("djqueue.pool")


class Concurrency:
    """For the prefork pool: how many messages of a task a child runs at once, per task name
    (read once per name)."""

    def __init__(self) -> None:
        self.by_name: dict[str, int] = {}

    def of(self, task_name: str) -> int:
        found = self.by_name.get(task_name)
        if found is None:
            found = self.by_name[task_name] = coroutines.concurrency(app.tasks.get(task_name))
        return found

    def spare(self, children: int) -> int:
        """Messages beyond one per child the worker may hold: a batch per child, when a
        registered task runs coroutines together."""
        if not self.by_name:
            self.by_name = {name: coroutines.concurrency(task) for name, task in app.tasks.items()}
        return (max(self.by_name.values(), default=1) - 1) * children


def child_for(plan: Any, task_name: str, candidates: list[Child]) -> tuple[Child, float] | None:
    """Where a prefork plan puts a coroutine to run together: with the plan's others of the same
    task while there is room for ``async_concurrency`` of them, else in an idle child; never with
    anything else. (Its expected run time does not count: nothing queues behind it.)"""
    limit = plan.pool.runs_together.of(task_name)
    for child in plan.children:
        if plan.together.get(id(child)) == task_name and plan.count[id(child)] < limit:
            return child, 0.0
    idle = [c for c in candidates if plan.count[id(c)] == 0]
    return (idle[0], 0.0) if idle else None

_executor: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None


def _threads() -> concurrent.futures.ThreadPoolExecutor:
    """Threads that wait for the coroutines of a batch (each runs one message's ``execute``);
    per process, kept across batches."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        # Threads are started as batches need them, up to the largest batch a child is sent.
        _executor = (os.getpid(), concurrent.futures.ThreadPoolExecutor(
            coroutines.MAX_CONCURRENCY, thread_name_prefix="djqueue-coroutine"))
    return _executor[1]


_NAME = Job.__slots__.index("task_name")  # where a job's task name is in its wire tuple
_together: dict[str, bool] = {}  # task name -> runs together (read once per process)


def runs_together(batch: Sequence[tuple[Any, ...]]) -> bool:
    """Whether a batch a prefork child received is one of coroutines to run at once: messages of
    one task whose ``async_concurrency`` is above 1 (the pool sends such batches only to idle
    children). Asked of every batch, so known per task name after the first."""
    name = batch[0][_NAME]
    found = _together.get(name)
    if found is None:
        found = _together[name] = coroutines.concurrency(app.tasks.get(name)) > 1
    return found and all(fields[_NAME] == name for fields in batch)


def is_revoke(message: object) -> bool:
    """Whether something a child read from its pipe is a revocation (``("revoke", id)``) rather
    than a batch; one that arrives after its batch finished is simply ignored."""
    return isinstance(message, tuple) and message[:1] == ("revoke",)


def run_together(batch: Sequence[tuple[Any, ...]], conn: Connection) -> None:
    """Run a batch of coroutine messages at once; send each outcome in the batch's order (the
    order the worker expects them), listening for revocations meanwhile."""
    jobs = [job_from_wire(fields) for fields in batch]
    pool = _threads()
    futures = [pool.submit(execute, job) for job in jobs]
    for job, future in zip(jobs, futures):
        while True:
            try:
                outcome = future.result(timeout=0.05)
                break
            except concurrent.futures.TimeoutError:
                _read_revocations(conn)
        if coroutines.revoked(job.message_id):
            if outcome.state != states.SUCCESS:
                outcome = unrun(job, TaskRevokedError("terminated"),
                                app.conf.CELERY_RESULT_SERIALIZER, state=states.REVOKED)
        conn.send(outcome_to_wire(outcome))


def _read_revocations(conn: Connection) -> None:
    try:
        while conn.poll(0):
            message = conn.recv()
            if is_revoke(message):
                coroutines.revoke(message[1])
            else:
                logger.error("A pool process running coroutines got %r from the worker; "
                             "ignored.", message)
    except (EOFError, OSError):
        pass  # the worker is gone: the next send says so to the child's loop
