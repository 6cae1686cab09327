"""What a call is checked for before anything is sent, as Celery checks it: the arguments against
the task's signature (Celery's ``typing``, on by default; ``@task(typing=False)`` turns it off),
and time limits that contradict each other."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import App
    from .task import Task

#: Per task (a task's ``run`` does not change): its signature, and for the common call with
#: positional arguments only, the counts that decide it without binding.
_CACHED = "_djqueue_call_signature"


class _Shape:
    """A task's signature, with a shortcut for calls without keyword arguments."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        kinds = [p.kind for p in signature.parameters.values()]
        positional = [p for p in signature.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.keyword_only_required = any(
            p.kind is p.KEYWORD_ONLY and p.default is p.empty
            for p in signature.parameters.values())
        self.required = sum(p.default is p.empty for p in positional)
        self.most = None if inspect.Parameter.VAR_POSITIONAL in kinds else len(positional)

    def fits_positionally(self, count: int) -> bool:
        return (not self.keyword_only_required and self.required <= count
                and (self.most is None or count <= self.most))


def check_arguments(task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raise TypeError, as calling the function would, when ``args``/``kwargs`` do not fit the
    task (``add.delay(5)`` for ``add(x, y)``): the mistake shows at the caller, before a message
    that could only fail is sent. A call with positional arguments only is decided by counting
    (``Signature.bind`` costs some 5 µs a call, on the path of every ``delay()``)."""
    shape = task.__dict__.get(_CACHED)
    if shape is None:
        try:
            shape = _Shape(inspect.signature(task.run))
        except (TypeError, ValueError):  # no signature to check against (a builtin): no check
            shape = False
        task.__dict__[_CACHED] = shape
    if shape is False or (not kwargs and shape.fits_positionally(len(args))):
        return
    try:
        shape.signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{task.name}() {exc}") from None


def check_canvas_call(app: App, name: str, args: Sequence[Any],
                      kwargs: Mapping[str, Any]) -> None:
    """Check a call a canvas sends now (a group's member, a chain's first step, a chord's header
    member) as ``Task.apply_async`` checks its own, which is what Celery's canvas calls: when this
    process has the task. A task it does not know is not checked (``send_task``'s case), nor are
    the steps sent later (they get the result of the one before)."""
    task = app.tasks.get(name)
    if task is not None and task.typing:
        check_arguments(task, args, kwargs or {})


def check_time_limits(soft: float | None, hard: float | None, where: str) -> None:
    """Refuse a soft time limit above the hard one: the hard limit would end the task before the
    soft limit ever let it clean up, which is never what the author meant."""
    if soft is not None and hard is not None and soft > hard:
        raise ValueError(
            f"{where}: soft_time_limit ({soft}) is greater than time_limit ({hard}); the soft "
            "limit must come first (soft_time_limit <= time_limit)")
