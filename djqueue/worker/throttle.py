"""Rate limits as a worker enforces them: a token bucket per task name, per worker.

As in Celery the limit holds per worker instance: each worker keeps its own bucket for every task
name. A message over its task's limit is not held in the worker's memory: the worker hands it back
to the database with a later ``available_at`` (see
:meth:`djqueue.broker.statements.Statements.defer`), so it stays visible and any worker may take
it when it is due.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..client.rates import parse_rate, task_rate
from ..exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from ..client.base import App

logger = logging.getLogger("djqueue.ratelimit")


class TokenBucket:
    """``rate`` tokens a second, holding at most ``capacity``; starts full.

    With capacity 1 (Celery's choice) tasks are spaced evenly: ``"30/m"`` lets one run every
    two seconds.
    """

    def __init__(self, rate: float, capacity: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> float:
        """Take a token if there is one and return 0.0; otherwise the seconds until there is."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class RateLimiter:
    """The buckets of one worker, by task name. A changed limit starts a fresh bucket."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def wait_time(self, task_name: str, rate_limit: object) -> float:
        """0.0 when a task of ``task_name`` may start now (its token is taken), otherwise the
        seconds until it may."""
        rate = parse_rate(rate_limit)
        if rate <= 0:
            self._buckets.pop(task_name, None)
            return 0.0
        bucket = self._buckets.get(task_name)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[task_name] = TokenBucket(rate, clock=self._clock)
        return bucket.take()


_UNKNOWN = object()


class Throttle:
    """What a worker asks before starting a message: may its task start now?"""

    def __init__(self, app: App, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.limiter = RateLimiter(clock)
        self._reported: set[tuple[str, object]] = set()
        #: Rate limits set at run time (``control rate_limit``), by task name; they win over the
        #: configured ones until ``control reset_rate_limit`` removes them.
        self.overrides: dict[str, str] = {}

    def validate(self) -> None:
        """Raise :class:`ImproperlyConfigured` for the first registered task whose limit is bad."""
        for name in list(self.app.tasks):
            rate = task_rate(self.app.tasks[name])
            try:
                parse_rate(rate)
            except ImproperlyConfigured as exc:
                raise ImproperlyConfigured(f"Task {name!r}: {exc}") from None

    def rate(self, task_name: str) -> object:
        """The limit in force for ``task_name`` now (None: none, or rate limits are disabled):
        its override, else its configured limit.

        The worker reads it once per round for each task name and passes it to
        :meth:`wait_time`, so a batch of messages costs one settings lookup, not one each.
        """
        if self.app.conf.CELERY_DISABLE_RATE_LIMITS:
            return None
        task = self.app.tasks.get(task_name)
        if task is None:
            return None
        override = self.overrides.get(task_name)
        if override is None:
            return task_rate(task)
        return override if override not in ("", "0") else None

    def wait_time(self, task_name: str, rate: object = _UNKNOWN) -> float:
        """0.0 when a message of ``task_name`` may start now, else the seconds until it may.

        A limit that became unparsable while the worker runs is logged once and not enforced:
        the system checks report it, and the worker keeps running its tasks.
        """
        if rate is _UNKNOWN:
            rate = self.rate(task_name)
        if rate is None:
            return 0.0
        try:
            return self.limiter.wait_time(task_name, rate)
        except ImproperlyConfigured as exc:
            if (task_name, rate) not in self._reported:
                self._reported.add((task_name, rate))
                logger.error("Task %s: %s; running it without a rate limit.", task_name, exc)
            return 0.0
