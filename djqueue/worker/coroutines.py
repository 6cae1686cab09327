"""``async def`` tasks: one event loop per process, kept across tasks, and many coroutines of
one process at once when a task says so (``@task(async_concurrency=N)``).

The loop runs in a thread of its own, started on first use in each process (a forked pool child
starts its own: a loop never crosses a fork). :func:`run` hands it one coroutine task and waits
for it, from whatever thread runs :func:`~djqueue.worker.execution.execute`, so that function
keeps one shape for both kinds of task (decode, request, retries, encoding, the log line).

Time limits: the soft limit cancels the coroutine (it sees :class:`asyncio.CancelledError` at its
``await``, as under :func:`asyncio.timeout`) and the task fails with
:class:`~djqueue.exceptions.SoftTimeLimitExceeded`; SIGALRM is not used, since it would land in
the loop rather than in the task. The hard limit cancels it the same way
(:class:`~djqueue.exceptions.TimeLimitExceeded`), so the process and its loop live on; the prefork
pool still kills the process a little later if the loop itself is stuck (a coroutine that blocks).

Concurrency per process: the prefork pool sends an idle child a batch of up to ``N`` messages of
tasks whose ``async_concurrency`` is above 1 (:func:`concurrency`), which the child runs together
(:mod:`djqueue.worker.pools.together`); :func:`revoke` cancels one of them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from typing import TYPE_CHECKING, Any

from ..client.task import RUNNING_REQUEST, Task
from ..exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

if TYPE_CHECKING:
    from .execution import Job

#: The most coroutines of one task a process runs at once (``async_concurrency`` is capped here).
MAX_CONCURRENCY = 256
#: Seconds the prefork pool waits past a coroutine's hard time limit before it kills the child:
#: the loop cancels the coroutine at the limit itself, and only a stuck loop needs the kill.
HARD_LIMIT_GRACE = 2.0

_is_async: dict[type, bool] = {}


def is_async(task: Task) -> bool:
    """Whether ``task`` is an ``async def`` task (known per task class, asked once)."""
    kind = type(task)
    found = _is_async.get(kind)
    if found is None:
        found = _is_async[kind] = inspect.iscoroutinefunction(task.run)
    return found


_grace: dict[str, float] = {}


def grace(task_name: str) -> float:
    """Seconds past its hard time limit after which the pool kills the process running a job of
    ``task_name``: for a coroutine the loop cancels it at the limit itself, and only a stuck loop
    needs the kill; none for other tasks."""
    found = _grace.get(task_name)
    if found is None:
        # On first use: the registry fills when the app's task modules are imported.
        from ..client.base import app

        task = app.tasks.get(task_name)
        found = _grace[task_name] = HARD_LIMIT_GRACE if task and is_async(task) else 0.0
    return found


def concurrency(task: Task | None) -> int:
    """How many messages of ``task`` one pool process runs at once: its ``async_concurrency`` for
    an ``async def`` task, else 1."""
    if task is None or not is_async(task):
        return 1
    return min(MAX_CONCURRENCY, max(1, int(task.async_concurrency or 1)))


class _Loop:
    """This process's event loop, running in a daemon thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="djqueue-asyncio",
                                       daemon=True)
        self.thread.start()
        self.running: dict[int, asyncio.Task[Any]] = {}  # message id -> its coroutine's task
        self.revoked: set[int] = set()


_lock = threading.Lock()
_current: _Loop | None = None


def _loop() -> _Loop:
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = _Loop()
        return _current


def run(task: Task, args: list[Any], kwargs: dict[str, Any], job: Job) -> Any:
    """Run one call of the coroutine task ``task`` on this process's loop and return its value
    (or raise its exception); the caller's ``task.request`` is the coroutine's too."""
    holder = _loop()
    request = task.request

    async def guarded() -> Any:
        RUNNING_REQUEST.set(request)
        me = asyncio.current_task()
        assert me is not None
        holder.running[job.message_id] = me
        if job.message_id in holder.revoked:  # revoked before it began
            holder.running.pop(job.message_id, None)
            raise TaskRevokedError("terminated")
        loop = asyncio.get_running_loop()
        timers, why = [], []
        for seconds, error in ((job.soft_time_limit, SoftTimeLimitExceeded),
                               (job.time_limit, TimeLimitExceeded)):
            if seconds:
                timers.append(loop.call_later(seconds, _cut, me, why, error(
                    f"{'Soft time' if error is SoftTimeLimitExceeded else 'Hard time'} limit "
                    f"({seconds}s) exceeded")))
        try:
            return await task.run(*args, **kwargs)
        except asyncio.CancelledError:
            if why:  # the last limit reached (a task may go on after its soft limit)
                raise why[-1] from None
            if job.message_id in holder.revoked:
                raise TaskRevokedError("terminated") from None
            raise
        finally:
            for timer in timers:
                timer.cancel()
            holder.running.pop(job.message_id, None)

    return asyncio.run_coroutine_threadsafe(guarded(), holder.loop).result()


def _cut(me: asyncio.Task[Any], why: list[BaseException], error: BaseException) -> None:
    if not me.done():
        why.append(error)
        me.cancel()


def revoke(message_id: int) -> None:
    """Cancel the coroutine of ``message_id`` (revoke with ``terminate=True``); one that has not
    begun yet fails as revoked when it begins."""
    holder = _loop()
    holder.revoked.add(message_id)
    task = holder.running.get(message_id)
    if task is not None:
        holder.loop.call_soon_threadsafe(task.cancel)


def revoked(message_id: int) -> bool:
    """Whether ``message_id`` was revoked here (forgotten once asked)."""
    holder = _loop()
    if message_id in holder.revoked:
        holder.revoked.discard(message_id)
        return True
    return False
