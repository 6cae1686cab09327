"""One attempt of one task: decode the message, call the function, encode what came of it.

:func:`execute` runs wherever the pool runs tasks (a forked child, a thread, or the worker itself)
and returns an :class:`Outcome`, plain data the worker process stores and acknowledges in batches.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

from django.db import connections

from . import states
from .exceptions import DecodeError, EncodeError, WorkerLostError
from .serialization import dumps, exception_to_data, loads

REPR_LIMIT = 1024


@dataclass(slots=True)
class Job:
    """What a pool needs to run one message."""

    message_id: int
    task_id: str
    task_name: str
    queue: str
    priority: int
    content_type: str
    body: str
    retries: int
    hostname: str
    acks_late: bool = False


@dataclass(slots=True)
class Outcome:
    """What came of running a :class:`Job`.

    ``action`` tells the worker what to do with the message: ``ack`` (delete it), ``reject`` (set
    it aside: it can never run here) or ``requeue`` (give it back for another attempt).
    """

    job: Job
    state: str
    action: str = "ack"
    store: bool = True
    content_type: str = "application/json"
    result: str | None = None
    result_repr: str = ""
    traceback: str | None = None
    runtime: float = 0.0
    args_repr: str = ""
    kwargs_repr: str = ""


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def _encode_exception(exc: BaseException, serializer: str) -> tuple[str, str]:
    return dumps(exception_to_data(exc), serializer)


def _release_broken_connections() -> None:
    """Close connections a task left unusable, so the next task gets a working one.

    Connections are otherwise kept open between tasks: reconnecting per task would cost more
    than the tasks themselves.
    """
    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred and not conn.is_usable():
            conn.close()
        conn.errors_occurred = False


def execute(job: Job) -> Outcome:
    from .app import app

    conf = app.conf
    result_serializer = conf.CELERY_RESULT_SERIALIZER
    started = time.perf_counter()
    try:
        payload = loads(job.body, job.content_type, conf.CELERY_ACCEPT_CONTENT or [])
        args, kwargs = list(payload["args"]), dict(payload["kwargs"])
    except (DecodeError, KeyError, TypeError, ValueError) as exc:
        error = exc if isinstance(exc, DecodeError) else DecodeError(f"Malformed message body: {exc!r}")
        return unrun(job, error, result_serializer, action="reject")
    task = app.tasks[job.task_name]
    ignore_result = bool(task.resolved("ignore_result", "CELERY_IGNORE_RESULT"))
    outcome = Outcome(job, states.SUCCESS, args_repr=_short_repr(args), kwargs_repr=_short_repr(kwargs))
    task.push_request(
        id=job.task_id, args=args, kwargs=kwargs, retries=job.retries, hostname=job.hostname,
        eta=payload.get("eta"), expires=payload.get("expires"),
        delivery_info={"routing_key": job.queue, "priority": job.priority},
    )
    try:
        value = task.run(*args, **kwargs)
    except Exception as exc:
        outcome.state = states.FAILURE
        outcome.traceback = traceback.format_exc()
        outcome.content_type, outcome.result = _encode_exception(exc, result_serializer)
        outcome.result_repr = _short_repr(exc)
        outcome.store = not ignore_result or bool(
            task.resolved("store_errors_even_if_ignored", "CELERY_STORE_ERRORS_EVEN_IF_IGNORED")
        )
    else:
        outcome.result_repr = _short_repr(value)
        outcome.store = not ignore_result
        if outcome.store:
            try:
                outcome.content_type, outcome.result = dumps(value, result_serializer)
            except EncodeError as exc:
                outcome.state = states.FAILURE
                outcome.traceback = traceback.format_exc()
                outcome.content_type, outcome.result = _encode_exception(exc, result_serializer)
                outcome.result_repr = _short_repr(exc)
    finally:
        task.pop_request()
        _release_broken_connections()
    outcome.runtime = time.perf_counter() - started
    return outcome


def unrun(
    job: Job, error: BaseException, serializer: str, *, state: str = states.FAILURE,
    action: str = "ack", store: bool = True,
) -> Outcome:
    """The outcome of a job that did not run to its end (rejected, expired, or cut short)."""
    content_type, result = _encode_exception(error, serializer)
    return Outcome(
        job, state, action=action, store=store, content_type=content_type, result=result,
        result_repr=_short_repr(error),
    )


def lost(job: Job, reason: str, serializer: str) -> Outcome:
    """The outcome of a job whose process died or was stopped before it finished.

    With ``acks_late`` the message goes back to the queue (at-least-once); without it the task is
    marked FAILURE with :class:`WorkerLostError` (at-most-once).
    """
    return unrun(
        job, WorkerLostError(reason), serializer,
        action="requeue" if job.acks_late else "ack", store=not job.acks_late,
    )
