"""Tasks that misbehave on purpose, for the fault-injection tests.

Every task appends a line to DJQUEUE_RECORD_FILE when it starts, so tests count executions.
"""

from __future__ import annotations

import os
import signal
import time

from djqueue import task
from djqueue.exceptions import SoftTimeLimitExceeded


class Flaky(Exception):
    pass


def note(key: object) -> None:
    line = f"{key} {os.getpid()}\n".encode()
    fd = os.open(os.environ["DJQUEUE_RECORD_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@task
def die(key: str) -> None:
    """The pool child dies mid-task, as after a segfault or an OOM kill."""
    note(key)
    os._exit(13)


@task
def killed(key: str) -> None:
    """The pool child is SIGKILLed mid-task, as by the kernel's OOM killer."""
    note(key)
    os.kill(os.getpid(), signal.SIGKILL)


@task(acks_late=True)
def die_once_late(key: str, marker: str) -> str:
    """Dies on its first run only (acks_late: it must run again)."""
    note(key)
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(13)
    return "second run"


@task
def nap(key: str, seconds: float) -> str:
    note(key)
    time.sleep(seconds)
    return key


@task(acks_late=True)
def nap_late(key: str, seconds: float) -> str:
    note(key)
    time.sleep(seconds)
    return key


@task(soft_time_limit=0.5)
def slow_but_polite(key: str) -> str:
    """Catches its soft time limit and cleans up."""
    note(key)
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "overslept"


@task(bind=True, max_retries=3)
def flaky(self, key: str, failures: int) -> int:
    """Fails ``failures`` times, retrying at once; returns the attempt that succeeded."""
    note(key)
    if self.request.retries < failures:
        raise self.retry(exc=Flaky(f"attempt {self.request.retries}"), countdown=0)
    return self.request.retries


@task(autoretry_for=(Flaky,), retry_kwargs={"max_retries": 2, "countdown": 0})
def always_flaky(key: str) -> None:
    note(key)
    raise Flaky("never works")


@task
def pid(key: str) -> int:
    note(key)
    return os.getpid()


@task(bind=True)
def retry_in_a_minute(self, key: str) -> None:
    note(key)
    raise self.retry(exc=Flaky("later"), countdown=60)


@task
def quick(key: str, die: bool = False) -> str:
    """A short task; with ``die`` its pool child dies, while short jobs queued behind it in the
    same child have not begun (they must go back to the queue and run once)."""
    note(key)
    if die:
        os._exit(13)
    return key


@task
def planner_setting() -> str:
    """What the project's own code sees of the planner (in a pool child)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT concat_ws(' ', current_setting('enable_seqscan'), "
                       "current_setting('plan_cache_mode'), current_setting('jit'))")
        return cursor.fetchone()[0]


@task
def nul_in_error(key: str) -> None:
    """Fails with a message PostgreSQL's text columns cannot hold as it is (a NUL character)."""
    note(key)
    raise ValueError(f"bad byte \x00 in {key}")


class Unprintable:
    """A value whose ``repr()`` and ``str()`` raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


@task
def unprintable_error(key: str) -> None:
    note(key)
    raise ValueError(Unprintable())


@task
def unprintable_result(key: str) -> object:
    note(key)
    return Unprintable()


class ArgsRaise(Exception):
    """An exception whose ``args`` cannot be read."""

    @property
    def args(self):  # type: ignore[override]
        raise RuntimeError("no args")


@task
def unreadable_error(key: str) -> None:
    note(key)
    raise ArgsRaise("x")


@task
def deep_error(key: str) -> None:
    note(key)
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    raise ValueError(nested)


@task
def surrogate_in_error(key: str) -> None:
    """Fails with a lone surrogate in its message, which no UTF-8 text can hold (a file name
    decoded with ``surrogateescape`` carries such characters)."""
    note(key)
    raise ValueError(f"bad \ud800 in {key}")


@task
def surrogate_result(key: str) -> str:
    note(key)
    return f"odd \udcff in {key}"


# For tests/test_reliability.py.


@task(acks_late=True)
def quick_late(key: str) -> str:
    """``quick`` with acks_late: a run cut short by a dead process runs again."""
    note(key)
    return key


@task(acks_late=True)
def crash_late(key: str) -> None:
    """A crash loop: every run of it kills its pool process, and acks_late puts it back."""
    note(key)
    os._exit(1)


def runs_so_far(key: str) -> int:
    """How many times ``key`` was noted in DJQUEUE_RECORD_FILE."""
    with open(os.environ["DJQUEUE_RECORD_FILE"]) as lines:
        return sum(1 for line in lines if line.split()[0] == key)


@task(bind=True, acks_late=True, max_retries=1)
def crash_retry_crash(self, key: str, crashes: int) -> int:
    """Kills its pool process on its first ``crashes`` runs, then retries itself, then kills its
    pool process ``crashes`` more times, then succeeds; returns its number of runs."""
    before = runs_so_far(key)
    note(key)
    if before < crashes or crashes < before < 2 * crashes + 1:
        os._exit(1)
    if before == crashes:
        raise self.retry(countdown=0)
    return before + 1


@task
def repeat(text: str, times: int) -> str:
    """A result as large as asked for, from small arguments."""
    return text * times
