"""Removal of expired results (``CELERY_TASK_RESULT_EXPIRES``, default one day).

``python manage.py celery cleanup`` removes them on demand; every running worker also removes
them now and then, at a low rate: about ten times per expiry period, at most hourly, at least
every second — with jitter so that many workers started together do not clean together.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db import DatabaseError

if TYPE_CHECKING:
    from ..client.base import App

logger = logging.getLogger("djqueue.expiry")

MIN_INTERVAL = 1.0
MAX_INTERVAL = 3600.0


def cleanup_interval(expires: float | None) -> float:
    """Seconds between a worker's clean-ups for results kept ``expires`` seconds."""
    if not expires:
        return MAX_INTERVAL
    return min(MAX_INTERVAL, max(MIN_INTERVAL, expires / 10))


class PeriodicCleanup:
    """Called on every worker loop; cleans when due. A database error is logged, not raised:
    cleaning is retried at the next interval and never stops the worker."""

    def __init__(self, app: App, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self._clock = clock
        self._due = clock() + self._pause()

    def _pause(self) -> float:
        return cleanup_interval(self.app.conf.result_expires) * random.uniform(0.5, 1.0)

    def tick(self) -> None:
        if self._clock() < self._due:
            return
        self._due = self._clock() + self._pause()
        try:
            removed = self.app.backend.cleanup()
        except DatabaseError as exc:
            logger.warning("Could not remove expired results: %s", exc)
            return
        if removed:
            logger.info("Removed %d expired result(s).", removed)
