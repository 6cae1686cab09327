"""``link`` and ``link_error`` of a task run in this process (``task.apply()``, or with
``CELERY_ALWAYS_EAGER``): called here at once, as Celery's eager mode does."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import states
from .signature import Signature, listed, signature

if TYPE_CHECKING:
    from ..result import EagerResult
    from .context import Context
    from .task import Task


def follow(task: Task, result: EagerResult, request: Context,
           options: Mapping[str, Any]) -> EagerResult:
    """Apply the callbacks (with the result) or errbacks of a finished eager call; ``result``."""
    if result.state == states.SUCCESS:
        for callback in listed(options.get("link")):
            signature(callback, app=task.app).apply((result.result,), parent_id=result.id)
    elif result.state == states.FAILURE:
        for errback in listed(options.get("link_error")):
            sig = signature(errback, app=task.app)
            if new_style(sig):
                sig(request, result.result, result.traceback)
            else:
                sig.apply((result.id,), parent_id=result.id)
    return result


def new_style(sig: Signature) -> bool:
    """Whether an errback takes ``(request, exc, traceback)``: its function has more than one
    positional parameter, as Celery decides. One not registered here is old-style
    (``errback(task_id)``), as in Celery."""
    task = sig.app.tasks.get(sig.task)
    if task is None:
        return False
    try:
        parameters = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = [p.kind for p in parameters]
    var = inspect.Parameter.VAR_POSITIONAL
    positional = [k for k in kinds if k in (inspect.Parameter.POSITIONAL_ONLY,
                                            inspect.Parameter.POSITIONAL_OR_KEYWORD, var)]
    return len(positional) > 1 or var in positional
