"""Enqueueing and waiting from async code: ``await add.adelay(2, 2)``, ``await
add.aapply_async(...)``, ``await result.aget(timeout=...)``.

Enqueueing runs ``apply_async`` through ``sync_to_async(thread_sensitive=True)``, as Django's own
async ORM methods do: in the thread (and on the database connection) that the request's other
sync code uses, so an async view never meets ``SynchronousOnlyOperation``. That connection is in
autocommit unless sync code around it opened a transaction: a task enqueued from async code is
committed at once, as ``Model.objects.acreate()`` is. To enqueue with other writes in one
transaction, do both inside one sync function (``transaction.atomic()`` and ``delay()``) and
call it with ``sync_to_async``. Waiting polls the result backend, each look in that thread too,
and sleeps with ``asyncio.sleep`` in between, so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from ..exceptions import TimeoutError

if TYPE_CHECKING:
    from ..result import AsyncResult


class AsyncCalls:
    """``adelay`` and ``aapply_async`` of :class:`~djqueue.client.task.Task`."""

    apply_async: Any  # the Task's

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay()`` for async code."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> AsyncResult:
        """``apply_async()`` for async code; takes the same arguments."""
        return await sync_to_async(self.apply_async, thread_sensitive=True)(args, kwargs, **options)


class AsyncWait:
    """``aget`` of :class:`~djqueue.result.AsyncResult`."""

    id: str
    get: Any  # the result's
    ready: Any

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float = 0.5) -> Any:
        """``get()`` for async code: wait for the task without blocking the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        ready = sync_to_async(self.ready, thread_sensitive=True)
        while not await ready():
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"The operation timed out: task {self.id} did not finish in {timeout}s")
            sleep = pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0))
            await asyncio.sleep(sleep)
            pause = min(pause * 2, interval)
        return await sync_to_async(self.get, thread_sensitive=True)(propagate=propagate)
