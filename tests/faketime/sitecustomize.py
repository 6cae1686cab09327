"""Imported at start-up (as ``sitecustomize``) by the worker processes that
tests/test_reliability.py runs under libfaketime, and by nothing else.

Those workers keep the real monotonic clock (FAKETIME_DONT_FAKE_MONOTONIC=1): with a faked one,
every wait with a timeout in ``threading`` (the heartbeat's) never ends, since the kernel compares
the deadline with the real clock. But with it, libfaketime 0.9.10 fails the
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` that ``time.sleep()`` waits in with EINVAL.
So ``time.sleep()`` waits in ``select()`` here, which libfaketime leaves alone.
"""

import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
