"""Tasks for the workflow tests (chains, chords, callbacks): in-process ones, and ones that write a
line per start to DJQUEUE_RECORD_FILE (via fault_tasks.note) for workers in other processes.
Workers load them through DJQUEUE_EXTRA_IMPORTS."""

from __future__ import annotations

import os
import time
import uuid

from djqueue import task
from djqueue.canvas import group

from .fault_tasks import note

#: Errbacks called in this process (the solo pool of in-process tests): (request id, exc, tb).
ERRORS: list[tuple[str, BaseException, str | None]] = []


class Boom(Exception):
    pass


@task(name="wf.add")
def add(x, y):
    return x + y


@task(name="wf.mul")
def mul(x, y):
    return x * y


@task(name="wf.xsum")
def xsum(numbers):
    return sum(numbers)


@task(name="wf.identity")
def identity(value):
    return value


@task(name="wf.boom")
def boom(*args):
    raise Boom(f"boom {args!r}")


@task(name="wf.on_error")
def on_error(request, exc, traceback):
    """A new-style errback (Celery 5): ``(request, exc, traceback)``."""
    ERRORS.append((request.id, exc, traceback))
    if os.environ.get("DJQUEUE_RECORD_FILE"):
        note(f"errback:{request.id}:{type(exc).__name__}")


@task(name="wf.on_error_old")
def on_error_old(task_id):
    """An old-style errback: the failed task's id."""
    ERRORS.append((task_id, Exception("old style"), None))
    if os.environ.get("DJQUEUE_RECORD_FILE"):
        note(f"olderrback:{task_id}")


@task(name="wf.noted")
def noted(value, key):
    """Records ``key`` and what it received, returns ``value``."""
    note(f"{key}:{value!r}".replace(" ", ""))
    return value


@task(name="wf.replaced", bind=True)
def replaced(self, x):
    """Replaces itself with ``add(x, 100)``."""
    return self.replace(add.s(x, 100))


@task(name="wf.spawner")
def spawner(n):
    """Sends the group ``spawned(i)`` for ``i < n`` (its child) and ``add(0, 0)`` (not)."""
    group(spawned.s(i) for i in range(n))()
    add.apply_async((0, 0), add_to_parent=False)
    return n


@task(name="wf.spawned")
def spawned(i):
    mul.delay(i, i)
    return i


@task(name="wf.fanned", bind=True)
def fanned(self, x, n=3):
    """Replaces itself with the group ``add(x, i)`` for ``i < n``: returns their results."""
    return self.replace(group(add.s(x, i) for i in range(n)))


@task(name="wf.fanned_after", bind=True)
def fanned_after(self, x):
    """Replaces itself with a chain ending in a group: ``x + 1`` times 2 and times 3."""
    return self.replace(add.s(x, 1) | group(mul.s(2), mul.s(3)))


@task(name="wf.step", acks_late=True)
def step(received, k, seconds=0.0):
    """Step ``k`` of a chain under kill -9: records what it received (the step before's return
    value, unique per run), naps, returns a value unique to this run."""
    note(f"step{k} {received}")
    if seconds:
        time.sleep(seconds)
    return f"{k}-{uuid.uuid4().hex[:8]}"


@task(name="wf.member", acks_late=True)
def member(i, seconds=0.0):
    note(f"member{i}")
    if seconds:
        time.sleep(seconds)
    return i


@task(name="wf.body")
def body(results):
    note(f"body {len(results)} {sum(results)} {int(results == sorted(results))}")
    return sum(results)
