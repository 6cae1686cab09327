"""The life cycle of one call, as Celery's tracer runs it: the handlers a ``Task`` class may
define, the order they run in, and the eager ``apply()``.

Handlers, with Celery's signatures, all called with ``self.request`` still the call's request:

- ``before_start(task_id, args, kwargs)`` before the body; what it raises counts as the body's
  exception (a failure, or ``Retry``/``Reject``/``Ignore``);
- ``on_success(retval, task_id, args, kwargs)`` once the return value is encoded for storing;
- ``on_retry(exc, task_id, args, kwargs, einfo)`` when the call is retried (``exc`` is the
  ``exc`` given to ``retry()``, or None);
- ``on_failure(exc, task_id, args, kwargs, einfo)`` when it failed (also when its value could not
  be encoded: ``EncodeError``);
- ``after_return(status, retval, task_id, args, kwargs, einfo)`` last, after success or failure
  (not after a retry, ``Reject`` or ``Ignore``); ``einfo`` is None, as Celery passes it.

Only handlers a class overrides are called (Celery's ``task_has_custom``), and what a task class
overrides is worked out once per task, so a task with none costs the worker one dictionary
lookup. A handler set by ``CELERY_ANNOTATIONS`` (Celery's ``{"*": {"on_failure": f}}``) counts
and is bound to the task like a method. A class that overrides ``__call__`` is called through it,
as Celery's worker does. An exception raised by ``on_success``, ``on_retry``, ``on_failure`` or
``after_return`` is logged (``INTERNAL ERROR``, with its traceback) and does not change how the
call ended; in ``apply()`` it is raised, as in Celery's eager mode.

One difference from Celery, from djqueue's design: the worker stores results in batches after the
call returns (see :mod:`djqueue.worker.rounds`), so ``on_success``/``on_failure`` run before the
final state is in the result backend, where Celery stores it first.
"""

from __future__ import annotations

import inspect
import logging
import socket
import traceback
import types
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync

from . import eager, tracing
from .. import states
from ..backends import ResultRecord
from ..exceptions import Ignore, Reject, Retry
from ..result import EagerResult
from ..serialization import dumps, exception_to_data

if TYPE_CHECKING:
    from .task import Task

logger = logging.getLogger("djqueue.worker")

HANDLERS = ("before_start", "on_success", "on_retry", "on_failure", "after_return")
_CACHE = "_djqueue_hooks"  # instance attribute: (annotations applied, Hooks or None)
_ANNOTATIONS = "_djqueue_annotations"  # see djqueue.client.annotations


class ExceptionInfo:
    """What a handler is told about an exception, with the attributes of Celery's ``einfo``
    (billiard's ``ExceptionInfo``): ``type``, ``exception``, ``tb``, ``traceback`` (text),
    ``exc_info``; ``str(einfo)`` is the traceback."""

    internal = False

    def __init__(self, exc: BaseException) -> None:
        self.type = type(exc)
        self.exception = exc
        self.tb = exc.__traceback__
        self.traceback = "".join(traceback.format_exception(self.type, exc, self.tb))

    @property
    def exc_info(self) -> tuple[type[BaseException], BaseException, types.TracebackType | None]:
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


class Hooks:
    """The handlers one task overrides, bound to it; None of them for one it does not."""

    __slots__ = ("task", "call", *HANDLERS)

    def __init__(self, task: Task, call: Callable[..., Any],
                 handlers: Mapping[str, Callable[..., Any] | None]) -> None:
        self.task = task
        self.call = call
        for name in HANDLERS:
            setattr(self, name, handlers[name])

    def run(self, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """The body: ``before_start``, then the task (through ``__call__`` when overridden)."""
        if self.before_start is not None:
            self.before_start(task_id, args, kwargs)
        return self.call(*args, **kwargs)

    def finish(self, state: str, retval: Any, task_id: str, args: list[Any],
               kwargs: dict[str, Any], *, eager: bool = False) -> None:
        """The handlers for how the call ended: ``state`` SUCCESS (``retval`` the value), RETRY
        (the :class:`Retry`) or FAILURE (the exception); no handler for any other state."""
        try:
            if state == states.SUCCESS:
                if self.on_success is not None:
                    self.on_success(retval, task_id, args, kwargs)
            elif state == states.RETRY:
                if self.on_retry is not None:
                    self.on_retry(retval.exc, task_id, args, kwargs, ExceptionInfo(retval))
                return
            elif state == states.FAILURE:
                if self.on_failure is not None:
                    self.on_failure(retval, task_id, args, kwargs, ExceptionInfo(retval))
            else:
                return
            if self.after_return is not None:
                self.after_return(state, retval, task_id, args, kwargs, None)
        except Exception as exc:
            if eager:
                raise
            logger.critical("Task %s[%s] INTERNAL ERROR: %r", shown_name(self.task), task_id,
                            exc, exc_info=True)


def _own(task: Task, name: str, base: type) -> Callable[..., Any] | None:
    """``task``'s ``name`` handler when its class (or its annotations) override ``base``'s."""
    annotated = task.__dict__.get(name)
    if annotated is not None:
        if isinstance(annotated, types.FunctionType):  # a plain function: bind it, as Celery
            return types.MethodType(annotated, task)  # sets annotations on the class
        return annotated
    if getattr(type(task), name) is getattr(base, name):
        return None
    return getattr(task, name)


def hooks_of(task: Task) -> Hooks | None:
    """The handlers ``task`` overrides, or None when it overrides none (nor ``__call__``);
    worked out again only when its annotations changed."""
    marker = task.__dict__.get(_ANNOTATIONS)
    cached = task.__dict__.get(_CACHE)
    if cached is not None and cached[0] is marker:
        return cached[1]
    base = next(cls for cls in type(task).__mro__ if cls.__dict__.get("_djqueue_base_task"))
    handlers = {name: _own(task, name, base) for name in HANDLERS}
    custom_call = type(task).__call__ is not base.__call__
    hooks = None
    if custom_call or any(handler is not None for handler in handlers.values()):
        hooks = Hooks(task, task if custom_call else task.run, handlers)
    task.__dict__[_CACHE] = (marker, hooks)
    return hooks


def shown_name(task: Task) -> str:
    """The name logs show for the running call: its ``shadow`` name when it has one."""
    return task.request.shadow or task.name


def store_state(task: Task, task_id: str | None, state: str, meta: Any) -> None:
    """``Task.update_state()``: write ``state`` and ``meta`` to the result backend now, where
    ``AsyncResult.state`` and ``.info`` read them. The call's final state replaces it later."""
    request = task.request
    task_id = task_id or request.id
    if not task_id:
        raise ValueError(f"{task.name}.update_state() needs a task_id outside a running task")
    backend = task.app.backend
    if not backend.enabled:
        return
    if isinstance(meta, BaseException):
        meta = exception_to_data(meta)
    content_type, result = dumps(meta, task.app.conf.CELERY_RESULT_SERIALIZER)
    backend.store([ResultRecord(
        task_id, state, task.name, content_type, result, worker=request.hostname or "",
        queue=(request.delivery_info or {}).get("routing_key") or "",
    )])


HOSTNAME = socket.gethostname()


def apply(task: Task, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None,
          task_id: str, throw: bool, headers: Mapping[str, Any] | None,
          options: Mapping[str, Any]) -> EagerResult:
    """Run ``task`` here, with its handlers, as Celery's ``apply()`` does, then its ``link`` or
    ``link_error`` callbacks of ``options`` (:func:`.eager.follow`). With ``throw`` the body's
    exception is raised after the errbacks, without ``on_failure``/``after_return``, as Celery's
    eager tracer propagates it before its handlers; a retry runs again at once."""
    args, kwargs = list(args or ()), dict(kwargs or {})
    hooks = hooks_of(task)
    retries = 0
    while True:
        task.push_request(
            headers, id=task_id, args=args, kwargs=kwargs, is_eager=True, retries=retries,
            hostname=HOSTNAME, correlation_id=task_id, delivery_info={"is_eager": True},
        )
        trace = tracing.Trace.begin(task, task_id, args, kwargs)  # None without receivers
        state, retval = None, None
        try:
            try:
                value = retval = (hooks.run(task_id, args, kwargs) if hooks
                                  else task.run(*args, **kwargs))
                if inspect.iscoroutine(value):  # an async def task, run here to its end
                    value = retval = async_to_sync(_awaited)(value)
                state = states.SUCCESS
            except Retry as retry:
                state, retval = states.RETRY, retry
                if hooks:
                    hooks.finish(states.RETRY, retry, task_id, args, kwargs, eager=True)
                args = list(retry.call_args) if retry.call_args is not None else args
                kwargs = dict(retry.call_kwargs) if retry.call_kwargs is not None else kwargs
                retries += 1
                continue
            except (Reject, Ignore) as exc:
                log_predicate(task, task_id, exc)
                state = states.REJECTED if isinstance(exc, Reject) else states.IGNORED
                return EagerResult(task_id, exc, state, traceback.format_exc())
            except Exception as exc:
                state, retval = states.FAILURE, exc
                failed = EagerResult(task_id, exc, states.FAILURE, traceback.format_exc())
                if throw:
                    eager.follow(task, failed, task.request, options)  # errbacks, then raise
                    raise
                if hooks:
                    hooks.finish(states.FAILURE, exc, task_id, args, kwargs, eager=True)
                return eager.follow(task, failed, task.request, options)
            if hooks:
                hooks.finish(states.SUCCESS, value, task_id, args, kwargs, eager=True)
            return eager.follow(task, EagerResult(task_id, value, states.SUCCESS), task.request,
                                options)
        finally:
            if trace is not None and state is not None:
                trace.end(state, retval)
            task.pop_request()


async def _awaited(coroutine: Any) -> Any:
    return await coroutine


def log_predicate(task: Task, task_id: str, exc: Reject | Ignore) -> None:
    """Celery's log lines for a call that ended with :class:`Reject` (WARNING, with the
    traceback) or :class:`Ignore` (INFO)."""
    if isinstance(exc, Reject):
        logger.warning("Task %s[%s] %r", shown_name(task), task_id, exc, exc_info=exc)
    else:
        logger.info("Task %s[%s] ignored", shown_name(task), task_id)
