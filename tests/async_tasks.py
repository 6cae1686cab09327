"""``async def`` tasks for the tests (loaded by workers through DJQUEUE_EXTRA_IMPORTS)."""

from __future__ import annotations

import asyncio
import os
import time

from djqueue import task

from example_project.demo.tasks import record


@task
async def async_add(x, y):
    await asyncio.sleep(0)
    return x + y


@task
async def async_sends(x):
    """Sends ``async_add(x, x)`` from its coroutine: one of its children."""
    return (await async_add.adelay(x, x)).id


@task(bind=True)
async def async_identity(self, key):
    """Records ``key`` and returns what the running task knows of itself."""
    record(key)
    await asyncio.sleep(0.01)
    return {"id": self.request.id, "pid": os.getpid(), "loop": id(asyncio.get_running_loop())}


@task(async_concurrency=50)
async def async_nap(key, seconds=0.3):
    """Records its start, naps without holding its process, records its end."""
    record(f"{key}-start")
    await asyncio.sleep(seconds)
    record(f"{key}-end")
    return time.time()


@task
async def async_cleanup_on_soft_limit(key, seconds):
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        record(f"{key}-cancelled")
        raise
    return "slept"


@task
async def async_blocks(seconds):
    """Blocks its event loop (a mistake in an async task): only the process's end stops it."""
    time.sleep(seconds)
    return "woke"


@task
async def async_goes_on_after_soft_limit(key):
    """Catches its soft limit and goes on: only the hard limit stops it."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        record(f"{key}-soft")
    await asyncio.sleep(30)
    return "never"
