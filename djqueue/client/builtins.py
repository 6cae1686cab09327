"""The tasks djqueue itself registers: Celery's ``celery.map`` and ``celery.starmap`` (what
``task.map()``, ``task.starmap()`` and ``task.chunks()`` send), ``celery.accumulate`` (the body
of the chord a group becomes when it replaces a task, ``Task.replace``) and ``djqueue.errback``
(how a worker calls a new-style ``link_error`` callback, see :mod:`djqueue.worker.workflow`).

They are registered on the app when this module is imported: by :mod:`djqueue.canvas` in a
process that sends them, by the worker's flow in every worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..serialization import exception_from_data
from .base import app
from .signature import Signature
from .context import Context
from .task import build_task

#: Name prefixes of built-in tasks: the worker's banner does not list them, as Celery's does not.
PREFIXES = ("celery.", "djqueue.")
#: The task that calls a new-style errback in a worker.
ERRBACK = "djqueue.errback"
#: The chord body that returns its header's results, when a group replaces a task.
ACCUMULATE = "celery.accumulate"


def is_builtin(name: str) -> bool:
    return name.startswith(PREFIXES)


def _map(task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
    call = Signature.from_dict(task, app=app)
    return [call(item) for item in it]


def _starmap(task: Mapping[str, Any], it: Iterable[Iterable[Any]]) -> list[Any]:
    call = Signature.from_dict(task, app=app)
    return [call(*item) for item in it]


def _accumulate(*args: Any, index: int | None = None) -> Any:
    """Celery's ``celery.accumulate``: its arguments, or the one at ``index``."""
    return args if index is None else args[index]


def _errback(errback: Mapping[str, Any], request: Mapping[str, Any],
             exc: Mapping[str, Any], traceback: str | None) -> Any:
    """Call a new-style errback as Celery does, ``errback(request, exc, traceback)``, with the
    failed task's request and exception rebuilt from the message."""
    call = Signature.from_dict(errback, app=app)
    return call(Context(**request), exception_from_data(dict(exc)), traceback)


for _name, _fun in (("celery.map", _map), ("celery.starmap", _starmap),
                    (ACCUMULATE, _accumulate), (ERRBACK, _errback)):
    app.register(build_task(app, _fun, name=_name))
