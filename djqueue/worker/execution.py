"""One attempt of one task: decode the message, call the function, encode what came of it.

:func:`execute` runs wherever the pool runs tasks (a forked child, a thread, or the worker itself)
and returns an :class:`Outcome`, plain data the worker process stores and acknowledges in batches.
"""

from __future__ import annotations

import datetime
import logging
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.utils import timezone

from .. import states
from ..client.base import app
from ..client.context import WORKERS_HEADER
from ..client.hooks import hooks_of
from ..client.result_graph import TRAIL
from ..client.tracing import Trace, internal_error
from . import coroutines
from ..exceptions import (
    DecodeError, EncodeError, Ignore, NotRegistered, Reject, Replaced, Retry,
    SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded, WorkerLostError,
)
from ..serialization import (
    CONTENT_TYPES, dumps, exception_to_data, loads, readable, readable_json, safe_repr,
)
from . import workflow
from .lifecycle_hooks import expected, predicate, push_request

if TYPE_CHECKING:
    from ..broker.rows import Claimed

logger = logging.getLogger("djqueue.worker")

REPR_LIMIT = 1024
#: A connection idle longer than this is checked before the next task uses it, so a database
#: restart while the worker was idle does not fail the first task of every child.
IDLE_CHECK_AFTER = 1.0


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
    time_limit: float | None = None
    soft_time_limit: float | None = None
    deliveries: int = 1  # starts of this attempt, this one included
    shown_name: str = ""  # the call's shadow name, else the task's (the worker's log lines)


@dataclass(slots=True)
class Outcome:
    """What came of running a :class:`Job`.

    ``action`` tells the worker what to do with the message: ``ack`` (delete it), ``reject`` (set
    it aside: it can never run here), ``requeue`` (give it back for another attempt), ``release``
    (give it back: it never began) or ``retry`` (give it back for ``retry_at``, with
    ``retry_body`` if the arguments changed).
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
    retry_at: datetime.datetime | None = None
    retry_body: str | None = None
    shadow: str | None = None  # the name the log shows (apply_async(shadow=…))
    logged: bool = False  # the pool process logged it already (Reject, Ignore)
    #: What follows the task in its workflow, written with its outcome (:mod:`.workflow`).
    flow: workflow.Flow | None = None
    #: The workers of each attempt, one a line, once the task was retried (its result's
    #: ``workers``); blank for a first attempt.
    workers: str = ""
    # The value or exception, for the signals sent here. Not on the wire (outcome_from_wire
    # fills fields by position): keep it the last field.
    retval: Any = None


#: The fields of an Outcome besides its job, in order: what a pool process sends back (the worker
#: already has the job, and a plain tuple is several times cheaper to pickle than the object).
_OUTCOME_FIELDS = tuple(name for name in Outcome.__slots__ if name not in ("job", "retval"))


def outcome_to_wire(outcome: Outcome) -> tuple[Any, ...]:
    return tuple(getattr(outcome, name) for name in _OUTCOME_FIELDS)


def outcome_from_wire(job: Job, fields: tuple[Any, ...]) -> Outcome:
    return Outcome(job, *fields)


def job_to_wire(job: Job) -> tuple[Any, ...]:
    return tuple(getattr(job, name) for name in Job.__slots__)


def job_from_wire(fields: tuple[Any, ...]) -> Job:
    return Job(*fields)


# What a task leaves behind (its value, exception, traceback, the reprs) is stored, logged and
# shown in the admin as text: it is made readable here, whatever the result backend, so no lone
# surrogate reaches a UTF-8 column or a log file (see serialization.readable).


def _short_repr(value: Any) -> str:
    text = readable(safe_repr(value))
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def _json_text(value: Any) -> str:
    """The arguments of a task that keeps them as JSON (``arguments_as_json``), whole."""
    return _encode(value, "json")[1]


def _encode(value: Any, serializer: str) -> tuple[str, str]:
    content_type, text = dumps(value, serializer)
    return content_type, readable_json(text) if serializer == "json" else text


def _encode_exception(exc: BaseException, serializer: str) -> tuple[str, str]:
    return _encode(exception_to_data(exc), serializer)


_last_task_end = 0.0


def _check_connections() -> None:
    """Before a task: close connections a previous task broke, and check idle ones still work.

    Connections are otherwise kept open between tasks: reconnecting per task would cost more
    than the tasks themselves.
    """
    idle = time.monotonic() - _last_task_end > IDLE_CHECK_AFTER
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and (conn.errors_occurred or idle) and not conn.is_usable():
            conn.close()
        conn.errors_occurred = False


def _raise_soft_limit(signum: int, frame: object) -> None:
    raise SoftTimeLimitExceeded("Soft time limit exceeded")


class _SoftLimit:
    """Arms SIGALRM for a soft time limit; only possible in a process's main thread."""

    def __init__(self, seconds: float | None) -> None:
        self.active = bool(seconds) and threading.current_thread() is threading.main_thread()
        self.seconds = seconds or 0.0

    def __enter__(self) -> None:
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


def _backoff(task: Any, retries: int) -> float:
    factor = 1 if task.retry_backoff is True else float(task.retry_backoff)
    countdown = min(float(task.retry_backoff_max), factor * (2**retries))
    return random.uniform(0, countdown) if task.retry_jitter else countdown


def _autoretry(task: Any, exc: Exception, retries: int) -> Retry | None:
    """A Retry for ``exc`` when the task's ``autoretry_for`` covers it (and retries remain)."""
    if not task.autoretry_for or not isinstance(exc, tuple(task.autoretry_for)):
        return None
    options = dict(task.retry_kwargs or {})
    if task.retry_backoff and "countdown" not in options:
        options["countdown"] = _backoff(task, retries)
    try:
        task.retry(exc=exc, **options)
    except Retry as retry:
        return retry
    return None  # pragma: no cover - retry() always raises


def execute(job: Job) -> Outcome:
    """Run ``job`` and say what came of it. Never raises: when recording the outcome fails in a
    way the encoders do not catch (an exception whose ``args`` raise, a pickled value whose
    ``__reduce__`` raises), the task fails with an :class:`EncodeError` that says so, rather
    than taking the pool process, and with it the outcome, down."""
    try:
        return _execute(job)
    except Exception as exc:  # noqa: BLE001 - user code reached from djqueue's own handling
        logger.exception("Could not record the outcome of %s[%s]", job.task_name, job.task_id)
        internal_error(app.tasks.get(job.task_name), job.task_id, exc)
        error = EncodeError(f"Could not record the outcome of {job.task_name}: {safe_repr(exc)}")
        return unrun(job, error, app.conf.CELERY_RESULT_SERIALIZER)


def _execute(job: Job) -> Outcome:
    global _last_task_end
    conf = app.conf
    result_serializer = conf.CELERY_RESULT_SERIALIZER
    started = time.perf_counter()
    try:
        payload = loads(job.body, job.content_type, conf.CELERY_ACCEPT_CONTENT or [])
        args, kwargs = list(payload["args"]), dict(payload["kwargs"])
        headers = dict(payload["headers"]) if "headers" in payload else None
    except (DecodeError, KeyError, TypeError, ValueError) as exc:
        error = exc if isinstance(exc, DecodeError) else DecodeError(f"Malformed message body: {exc!r}")
        return unrun(job, error, result_serializer, action="reject")
    task = app.tasks[job.task_name]
    ignore_result = bool(task.resolved("ignore_result", "CELERY_IGNORE_RESULT"))
    text = _json_text if task.arguments_as_json else _short_repr
    outcome = Outcome(job, states.SUCCESS, args_repr=text(args), kwargs_repr=text(kwargs))
    _check_connections()
    # apply_async(ignore_result=True) drops the value, not an error, as in Celery.
    ignore_value = push_request(task, outcome, payload, headers, args, kwargs) or ignore_result
    if headers and WORKERS_HEADER in headers:  # a retried task
        outcome.workers = "\n".join([*headers[WORKERS_HEADER], job.hostname])
    in_workflow = not workflow.FIELDS.isdisjoint(payload)
    hooks = hooks_of(task)
    retval: Any = outcome  # what the handlers are given: the value or the exception
    trace = Trace.begin(task, job.task_id, args, kwargs)
    sent: list[Any] | None = [] if task.trail else None  # what it sends: its children first
    trail = TRAIL.set(sent)
    try:
        if coroutines.is_async(task):  # on this process's event loop, limits and all
            if hooks is not None and hooks.before_start is not None:
                hooks.before_start(job.task_id, args, kwargs)
            retval = value = coroutines.run(task, args, kwargs, job)
        else:
            with _SoftLimit(job.soft_time_limit):
                retval = value = (hooks.run(job.task_id, args, kwargs) if hooks
                                  else task.run(*args, **kwargs))
    except Retry as retry:
        _retrying(outcome, retry, payload, result_serializer)
        retval = retry
    except Replaced as replacement:  # its replacement takes over its id: no result of its own
        outcome.state, outcome.store = states.IGNORED, False
        outcome.flow = workflow.replaced(job, payload, replacement.sig)  # type: ignore[arg-type]
    except (Reject, Ignore) as exc:
        predicate(task, outcome, exc, _failed, result_serializer)
    except Exception as exc:
        try:
            retry = _autoretry(task, exc, job.retries)
        except Exception as final:  # retries used up: retry() raised the error to fail with
            retry, exc = None, final
        if retry is not None:
            _retrying(outcome, retry, payload, result_serializer)
            retval = retry
        else:
            _failed(outcome, exc, result_serializer)
            retval = expected(task, outcome, exc)
            outcome.store = not ignore_result or bool(
                task.resolved("store_errors_even_if_ignored", "CELERY_STORE_ERRORS_EVEN_IF_IGNORED")
            )
            if in_workflow:
                outcome.flow = workflow.failed(job, payload, exc, outcome.traceback)
    else:
        outcome.result_repr = _short_repr(value)
        outcome.retval = value
        outcome.store = not ignore_value or "chord" in payload  # a chord body reads it
        if outcome.store:
            try:
                outcome.content_type, outcome.result = _encode(value, result_serializer)
            except EncodeError as exc:
                _failed(outcome, exc, result_serializer)
                retval = exc
                if in_workflow:
                    outcome.flow = workflow.failed(job, payload, exc, outcome.traceback)
        if in_workflow and outcome.state == states.SUCCESS:
            outcome.flow = workflow.succeeded(job, payload, value, outcome.store)
    finally:
        if hooks is not None and retval is not outcome:
            hooks.finish(outcome.state, retval, job.task_id, args, kwargs)
        if trace is not None:
            trace.end(outcome.state, outcome.retval)
        task.pop_request()
        TRAIL.reset(trail)
        _last_task_end = time.monotonic()
    if sent and outcome.store and outcome.state in (states.SUCCESS, states.FAILURE):
        outcome.flow = workflow.with_sent(outcome.flow, job.task_id, sent)
    outcome.runtime = time.perf_counter() - started
    return outcome


def _failed(outcome: Outcome, exc: BaseException, serializer: str) -> None:
    outcome.state = states.FAILURE
    outcome.retval = exc
    outcome.traceback = readable(traceback.format_exc())
    outcome.content_type, outcome.result = _encode_exception(exc, serializer)
    outcome.result_repr = _short_repr(exc)


def _retrying(outcome: Outcome, retry: Retry, payload: dict[str, Any], serializer: str) -> None:
    outcome.state = states.RETRY
    outcome.retval = retry
    outcome.action = "retry"
    when = retry.when if isinstance(retry.when, datetime.datetime) else timezone.now()
    outcome.retry_at = when
    reason = retry.exc if retry.exc is not None else retry
    outcome.content_type, outcome.result = _encode_exception(reason, serializer)
    outcome.result_repr = _short_repr(reason)
    outcome.traceback = readable(traceback.format_exc()) if retry.exc is not None else None
    # The next attempt's message names this attempt's worker after the earlier ones'.
    headers = dict(payload.get("headers") or {})
    headers[WORKERS_HEADER] = [*headers.get(WORKERS_HEADER, ()), outcome.job.hostname]
    new_payload = {**payload, "headers": headers}
    if retry.call_args is not None:
        new_payload["args"] = list(retry.call_args)
    if retry.call_kwargs is not None:
        new_payload["kwargs"] = dict(retry.call_kwargs)
    serializer_name = {v: k for k, v in CONTENT_TYPES.items()}[outcome.job.content_type]
    outcome.retry_body = dumps(new_payload, serializer_name)[1]


def unrun(
    job: Job, error: BaseException, serializer: str, *, state: str = states.FAILURE,
    action: str = "ack", store: bool = True,
) -> Outcome:
    """The outcome of a job that did not run to its end (rejected, expired, or cut short)."""
    content_type, result = _encode_exception(error, serializer)
    return Outcome(
        job, state, action=action, store=store, content_type=content_type, result=result,
        result_repr=_short_repr(error),
        flow=workflow.from_body(job, error, state) if action in ("ack", "reject") else None,
    )


def lost(job: Job, reason: str, serializer: str, max_deliveries: int | None = None) -> Outcome:
    """The outcome of a job whose process died or was stopped before it finished.

    With ``acks_late`` the message goes back to the queue (at-least-once), unless it has been
    started ``max_deliveries`` times: a task that kills its process is not run forever, it is
    set aside with FAILURE (:class:`WorkerLostError` naming the count). Without ``acks_late``
    the task is marked FAILURE with :class:`WorkerLostError` and the message is kept, set aside,
    for inspection (at-most-once).
    """
    if not job.acks_late:
        return unrun(job, WorkerLostError(reason), serializer, action="reject")
    if max_deliveries is None or job.deliveries < max_deliveries:
        return unrun(job, WorkerLostError(reason), serializer, action="requeue", store=False)
    logger.error("Task %s[%s] set aside: its process was lost each of the %d times it was "
                 "started (DJQUEUE_MAX_DELIVERIES).", job.task_name, job.task_id, job.deliveries)
    return unrun(job, WorkerLostError(
        f"{reason} The task was started {job.deliveries} times and its process was lost each "
        "time; it is set aside, not run again (DJQUEUE_MAX_DELIVERIES)."), serializer,
        action="reject")


def refused(
    message: Claimed, registry: Container[str], serializer: str
) -> Callable[[Job], Outcome] | None:
    """For a claimed message that must not run (its text unreadable, revoked, expired, or of a
    task this worker does not have), log why and return what makes its outcome from its job;
    None for one that runs."""
    if message.unreadable:  # set aside by the claim: kept so even if revoked or expired
        logger.error("Message %s[%s] set aside (state 'rejected'), not run: %s",
                     message.task_name, message.task_id, message.unreadable)
        return lambda job: unrun(job, DecodeError(message.unreadable), serializer,
                                 action="reject")
    if message.revoked or message.expired:
        why = "revoked" if message.revoked else "expired"
        logger.info("Discarding %s task: %s[%s]", why, message.shown_name, message.task_id)
        return lambda job: unrun(job, TaskRevokedError(why), serializer, state=states.REVOKED)
    if message.task_name not in registry:
        logger.error(
            "Received unregistered task of type %r.\nThe message has been set aside "
            "(state 'rejected'), not run: did you import the module that defines it "
            "(CELERY_IMPORTS, or a tasks.py in an installed app)?\nid: %s",
            message.task_name, message.task_id,
        )
        return lambda job: unrun(job, NotRegistered(message.task_name), serializer,
                                 action="reject")
    return None


def released(job: Job, serializer: str) -> Outcome:
    """The outcome of a job queued in a pool process that stopped before the job began: its
    message goes back to the queue, whatever its ``acks_late``."""
    return unrun(job, WorkerLostError("not begun"), serializer, action="release", store=False)


def timed_out(job: Job, serializer: str) -> Outcome:
    """The outcome of a job killed at its hard time limit."""
    error = TimeLimitExceeded(f"Hard time limit ({job.time_limit}s) exceeded")
    return unrun(job, error, serializer)
