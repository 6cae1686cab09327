"""Task rate limits: Celery's grammar (``"N/s"``, ``"N/m"``, ``"N/h"``, a bare number per second;
``None``, ``0`` or ``"0"``: no limit) and the limit in force for a task. The worker enforces them
(:mod:`djqueue.worker.throttle`)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from ..exceptions import InvalidRateLimit

if TYPE_CHECKING:
    from .task import Task

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*([smh]))?\s*$")


def parse_rate(value: object) -> float:
    """Tokens per second for a rate limit; 0.0 means unlimited.

    Raises :class:`~djqueue.exceptions.InvalidRateLimit` (a ``ValueError`` and an
    ``ImproperlyConfigured``) naming the accepted forms for anything else.
    """
    if value is None or value == "":
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise InvalidRateLimit(f"Invalid rate limit {value!r}: must not be negative")
        try:
            rate = float(value)
        except OverflowError:  # an int beyond floats
            rate = math.inf
    else:
        match = _RATE.match(str(value)) if isinstance(value, str) else None
        if match is None:
            raise InvalidRateLimit(
                f"Invalid rate limit {value!r}: expected N/s, N/m, N/h or a number (per second)"
            )
        number, unit = match.groups()
        rate = float(number) / _UNITS[unit or "s"]
    if not math.isfinite(rate):
        raise InvalidRateLimit(f"Invalid rate limit {str(value)[:20]!r}: must be a finite number")
    return rate


def task_rate(task: Task) -> object:
    """The rate limit in force for ``task``: its own (or annotated), else the default."""
    return task.resolved("rate_limit", "CELERY_DEFAULT_RATE_LIMIT")
