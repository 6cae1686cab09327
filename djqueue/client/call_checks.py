"""What a call is checked for before anything is sent, as Celery checks it: the arguments against
the task's signature (Celery's ``typing``, on by default; ``@task(typing=False)`` turns it off),
and time limits that contradict each other."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .task import Task

#: The signature of each task's ``run``, by task (a task's ``run`` does not change).
_SIGNATURE = "_djqueue_call_signature"


def check_arguments(task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raise TypeError, as calling the function would, when ``args``/``kwargs`` do not fit the
    task (``add.delay(5)`` for ``add(x, y)``): the mistake shows at the caller, before a message
    that could only fail is sent."""
    signature = task.__dict__.get(_SIGNATURE)
    if signature is None:
        try:
            signature = inspect.signature(task.run)
        except (TypeError, ValueError):  # no signature to check against (a builtin): no check
            signature = False
        task.__dict__[_SIGNATURE] = signature
    if signature is False:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{task.name}() {exc}") from None


def check_time_limits(soft: float | None, hard: float | None, where: str) -> None:
    """Refuse a soft time limit above the hard one: the hard limit would end the task before the
    soft limit ever let it clean up, which is never what the author meant."""
    if soft is not None and hard is not None and soft > hard:
        raise ValueError(
            f"{where}: soft_time_limit ({soft}) is greater than time_limit ({hard}); the soft "
            "limit must come first (soft_time_limit <= time_limit)")
