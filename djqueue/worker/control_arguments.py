"""The arguments of remote-control commands, checked before a handler changes anything.

A command row holds whatever JSON its sender wrote: ``app.control.broadcast()`` passes any
arguments along, and anything with access to the database can insert a row. So every handler in
:mod:`djqueue.worker.control` checks each argument here first; a bad one raises
:class:`ControlError`, which the worker replies as ``{"error": …}``, and nothing has changed.
``celery control`` checks its own arguments with the same functions.
"""

from __future__ import annotations

import math
from typing import Any

from ..client import identifiers
from ..exceptions import DjqueueError, InvalidIdentifier

#: ``pool_grow`` takes a pool no further: a slip of the keyboard (``10000`` for ``10``) would
#: otherwise fork processes until the machine runs out of memory. A worker started with more
#: keeps its size; it only cannot grow.
MAX_POOL = 1000
#: The longest time limit, in seconds (a year). A longer one is a mistake of units; one beyond
#: Python's timers (about 292 years) failed every later task of its type.
MAX_TIME_LIMIT = 365 * 24 * 3600.0


class ControlError(DjqueueError):
    """A command that cannot be carried out; the sender gets ``{"error": str(exc)}``."""


def task_name(tasks: Any, value: object) -> Any:
    """The registered task called ``value`` (``tasks``: the app's registry)."""
    if not isinstance(value, str):
        raise ControlError(f"a task name must be a string, not {value!r}")
    task = tasks.get(value)
    if task is None:
        raise ControlError(f"unknown task {value!r}")
    return task


def count(value: object) -> int:
    """A number of pool processes or threads: a whole number, at least 1 (``"3"`` is read as 3,
    as Celery's command line sends it)."""
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(f"n must be a whole number, not {value!r}")
    if value < 1:
        raise ControlError(f"n must be at least 1, not {value}")
    return value


def seconds(value: object, what: str) -> float | None:
    """A time limit: None (none set) or a number of seconds from 0 to :data:`MAX_TIME_LIMIT`;
    numeric strings are read as numbers (``"2.5"``)."""
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None:
        raise ControlError(f"the {what} must be a number of seconds, not {value!r}")
    if not (math.isfinite(number) and 0 <= number <= MAX_TIME_LIMIT):
        raise ControlError(f"the {what} must be from 0 to {MAX_TIME_LIMIT:.0f} seconds, "
                           f"not {value!r}")
    return number


def time_limits(soft: object, hard: object) -> tuple[float | None, float | None]:
    """Soft and hard limits, the soft one no longer than the hard one when both are set (0 and
    None mean no limit)."""
    soft_limit, hard_limit = seconds(soft, "soft time limit"), seconds(hard, "hard time limit")
    if soft_limit and hard_limit and soft_limit > hard_limit:
        raise ControlError(f"the soft time limit ({soft_limit:g}s) must not be longer than the "
                           f"hard one ({hard_limit:g}s)")
    return soft_limit, hard_limit


def queue(value: object) -> str:
    """A queue name: a non-empty string a message row can hold."""
    if value == "":
        raise ControlError("a queue name must not be empty")
    try:
        return identifiers.check("queue name", value, identifiers.MAX_QUEUE)
    except InvalidIdentifier as exc:
        raise ControlError(str(exc)) from None


def task_ids(value: object, stored: bool = True) -> list[str]:
    """One task id or a list of them. ``stored``: ids of rows, which must also fit the tables."""
    ids = [value] if isinstance(value, str) else value
    if not isinstance(ids, list):
        raise ControlError(f"expected a task id or a list of them, not {value!r}")
    for task_id in ids:
        if not isinstance(task_id, str) or not task_id:
            raise ControlError(f"a task id must be a non-empty string, not {task_id!r}")
        if stored:
            try:
                identifiers.check("task id", task_id, identifiers.MAX_TASK_ID)
            except InvalidIdentifier as exc:
                raise ControlError(str(exc)) from None
    return ids


def flag(value: object, what: str) -> bool:
    """A yes/no option: JSON's true or false, nothing else."""
    if not isinstance(value, bool):
        raise ControlError(f"{what} must be true or false, not {value!r}")
    return value
