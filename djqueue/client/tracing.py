"""Sending the task signals of one call, where the task runs (a pool process, or the caller for
``apply()``), and the publishing signals, where it is sent.

Every entry point first looks at the signals' ``receivers``: with none connected it returns at
once and builds nothing (see :mod:`djqueue.signals`), so the hot paths pay one attribute read.
"""

from __future__ import annotations

import sys
import time
import traceback as tb_module
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import signals, states
from ..serialization import loads, safe_repr

if TYPE_CHECKING:
    from ..broker.rows import NewMessage
    from .task import Task

#: The headers every message has (Celery's protocol 2 names); any other header a
#: ``before_task_publish`` receiver adds travels with the message and reaches the task as
#: ``task.request.headers``.
STANDARD_HEADERS = frozenset((
    "lang", "task", "id", "eta", "expires", "retries", "timelimit", "argsrepr", "kwargsrepr",
))


class ExceptionInfo:
    """An exception with its traceback (Celery's ``einfo``, billiard's ``ExceptionInfo``)."""

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception
        self.type = type(exception)
        self.tb: TracebackType | None = exception.__traceback__
        self.traceback = "".join(
            tb_module.format_exception(self.type, exception, exception.__traceback__))

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"




class Trace:
    """The signals of one run of a task: ``task_prerun`` at :meth:`begin`, then by outcome
    ``task_success``/``task_failure``/``task_retry`` and ``task_postrun`` at :meth:`end`, while
    the task's request is still pushed (receivers read ``sender.request``)."""

    __slots__ = ("task", "task_id", "args", "kwargs", "started")

    def __init__(self, task: Task, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.task, self.task_id, self.args, self.kwargs = task, task_id, args, kwargs
        self.started = time.perf_counter()

    @classmethod
    def begin(cls, task: Task, task_id: str, args: list[Any], kwargs: dict[str, Any]
              ) -> Trace | None:
        """Send ``task_prerun``; None (and nothing sent) when no task signal has a receiver."""
        if not signals.run_connected:
            return None
        trace = cls(task, task_id, args, kwargs)
        signals.task_prerun.send(sender=task, task_id=task_id, task=task, args=args, kwargs=kwargs)
        return trace

    def end(self, state: str, retval: Any) -> None:
        """Send the outcome's signal and ``task_postrun``. ``retval`` is the return value, or
        the exception (a :class:`~djqueue.exceptions.Retry` for a retry), as in Celery."""
        task = self.task
        escaping = sys.exception()  # called from a finally: an exception no handler caught
        if escaping is not None and state == states.SUCCESS:
            state, retval = states.FAILURE, escaping
        if state == states.SUCCESS:
            signals.task_success.send(sender=task, result=retval,
                                      runtime=time.perf_counter() - self.started)
        elif isinstance(retval, BaseException):
            einfo = ExceptionInfo(retval)
            if state == states.RETRY:
                signals.task_retry.send(sender=task, request=task.request, reason=retval,
                                        einfo=einfo)
            else:
                signals.task_failure.send(
                    sender=task, task_id=self.task_id, exception=retval, args=self.args,
                    kwargs=self.kwargs, traceback=einfo.tb, einfo=einfo)
        signals.task_postrun.send(sender=task, task_id=self.task_id, task=task, args=self.args,
                                  kwargs=self.kwargs, retval=retval, state=state)


def internal_error(task: Task | None, task_id: str, exc: BaseException) -> None:
    """``task_internal_error``: djqueue failed around the task (recording its outcome)."""
    if not signals.task_internal_error.receivers:
        return
    request = task.request if task is not None else None
    einfo = ExceptionInfo(exc)
    signals.task_internal_error.send(
        sender=task, task_id=task_id, args=getattr(request, "args", None),
        kwargs=getattr(request, "kwargs", None), request=request, exception=exc,
        traceback=einfo.tb, einfo=einfo)


# Publishing.


def before_publish(name: str, task_id: str, payload: dict[str, Any], queue: str,
                   priority: int | None, time_limits: tuple[float | None, float | None]) -> None:
    """Send ``before_task_publish`` for a message about to be encoded; the headers receivers
    add (trace context, say) are kept in ``payload["headers"]``, and so travel in its body."""
    args, kwargs = payload["args"], payload["kwargs"]
    headers: dict[str, Any] = {
        "lang": "py", "task": name, "id": task_id, "eta": payload.get("eta"),
        "expires": payload.get("expires"), "retries": 0, "timelimit": list(time_limits),
        "argsrepr": safe_repr(args), "kwargsrepr": safe_repr(kwargs),
        **payload.get("headers", {}),
    }
    properties = {"correlation_id": task_id, "priority": priority}
    signals.before_task_publish.send(
        sender=name, body=(args, kwargs, _EMBED), exchange="", routing_key=queue,
        headers=headers, properties=properties, declare=[], retry_policy=None)
    custom = {key: value for key, value in headers.items() if key not in STANDARD_HEADERS}
    if custom:
        payload["headers"] = custom


_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def after_publish(messages: Iterable[NewMessage]) -> None:
    """Send ``after_task_publish`` for each message written (read back from its body)."""
    for message in messages:
        head = message.head
        payload = loads(message.body, head.content_type, ("json", "pickle"))
        args, kwargs = payload.get("args", []), payload.get("kwargs", {})
        headers = {"lang": "py", "task": head.task_name, "id": message.task_id,
                   "eta": payload.get("eta"), "expires": payload.get("expires"), "retries": 0,
                   "timelimit": [head.time_limit, head.soft_time_limit],
                   **payload.get("headers", {})}
        signals.after_task_publish.send(
            sender=head.task_name, body=(args, kwargs, _EMBED), exchange="",
            routing_key=head.queue, headers=headers)
