"""Django's ``TaskResult`` read from djqueue's rows, for :mod:`djqueue.contrib.django_tasks`.

While a task waits or runs its message row says so: ``READY`` (ready or reserved), ``RUNNING``
(started), its arguments from the message's body. Once it finished, its result row (the result
backend's record) does: ``SUCCESS`` → ``SUCCESSFUL``; ``FAILURE`` and ``REVOKED`` → ``FAILED``, with
one ``TaskError`` naming the exception's class and the traceback; the arguments come from the
record, where these tasks keep them as JSON (``arguments_as_json``).

Times: ``enqueued_at`` is read from the result id, a version 7 UUID (its first 48 bits are the
enqueuing process's clock in milliseconds), so it outlives the message row at no cost to either
write. ``started_at``/``last_attempted_at`` are the message's start while it runs, and the end
less the run time once it finished; ``finished_at`` is the result's ``date_done``. ``worker_ids``
names the worker of each attempt, oldest first, and ``attempts`` counts them: a retry's message
carries the workers of the attempts before it (the ``workers`` header), and the result of a
retried task keeps them all (its ``workers``); a task never retried has its one worker.
"""

from __future__ import annotations

import datetime
import inspect
import os
import time
import traceback
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.tasks import TaskResult, TaskResultStatus
from django.tasks.base import Task, TaskError
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils.module_loading import import_string

from .. import states
from ..client.base import app
from ..client.context import WORKERS_HEADER
from ..serialization import is_exception_data, loads

if TYPE_CHECKING:
    from django.tasks.backends.base import BaseTaskBackend

    from ..backends import ResultRecord
    from ..client.task import Task as CeleryTask

#: Django tasks declared in this process, by module path (djqueue's task name for them).
_DECLARED: dict[str, Task] = {}


def register(task: Task, runner: Callable[[Any], CeleryTask]) -> None:
    """Register the djqueue task that runs ``task``, once per module path (``Task.using()``
    makes copies of a declared task: the first, the declaration, is the one kept)."""
    if task.module_path not in _DECLARED:
        _DECLARED[task.module_path] = task
        app.register(runner(task))


def is_coroutine(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func)


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def new_id() -> str:
    """A version 7 UUID: the time in milliseconds, then random bits."""
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def enqueued_at(result_id: str) -> datetime.datetime | None:
    """When a result id made by :func:`new_id` was made; None for any other id."""
    try:
        parsed = uuid.UUID(result_id)
    except ValueError:
        return None
    if parsed.version != 7:
        return None
    return datetime.datetime.fromtimestamp((parsed.int >> 80) / 1000, datetime.UTC)


def declared(name: str) -> Task | None:
    """The Django task whose module path is ``name``: declared here, or importable."""
    task = _DECLARED.get(name)
    if task is None:
        try:
            task = import_string(name)
        except ImportError:
            return None
    return task if isinstance(task, Task) else None


def read(backend: BaseTaskBackend, result_id: str) -> TaskResult:
    """Django's ``TaskResult`` for ``result_id``; ``TaskResultDoesNotExist`` when djqueue knows
    no Django task by that id."""
    # On first use: this module is imported when Django reads TASKS, which a project may do while
    # the app registry is still loading (a @task in a module its models import).
    from ..models import Message

    record = app.backend.get(result_id) if app.backend.enabled else None
    message = None
    if record is None or record.state not in states.READY_STATES:
        message = (Message.objects.using(app.conf.broker_alias).filter(task_id=result_id)
                   .values("task_name", "state", "body", "content_type", "created_at",
                           "started_at", "worker").first())
        if message is None and app.backend.enabled:
            # Finished between the two reads: the message leaves in the write of the result.
            record = app.backend.get(result_id)
    name = record.task_name if record is not None and record.task_name else (
        message["task_name"] if message else "")
    task = declared(name) if name else None
    if task is None:
        raise TaskResultDoesNotExist(result_id)
    if record is not None and record.state in states.READY_STATES:
        return _finished(backend, task, result_id, record)
    assert message is not None or record is not None
    return _waiting(backend, task, result_id, message, record)


def _body(text: str | None, content_type: str) -> tuple[list[Any], dict[str, Any], list[str]]:
    """The arguments in a message's body, and the workers of its earlier attempts."""
    try:
        payload = loads(text or "", content_type, ["json", "pickle"])
        earlier = (payload.get("headers") or {}).get(WORKERS_HEADER) or []
        return list(payload["args"]), dict(payload["kwargs"]), [str(w) for w in earlier]
    except Exception:  # noqa: BLE001 - an unreadable body: the state still matters more
        return [], {}, []


def _json(text: str, empty: Any) -> Any:
    try:
        return loads(text, "application/json", ["json"])
    except Exception:  # noqa: BLE001 - stored before the arguments were kept as JSON
        return empty


def _finished(backend: BaseTaskBackend, task: Task, result_id: str,
              record: ResultRecord) -> TaskResult:
    started = None
    if record.date_done is not None and record.runtime is not None:
        started = record.date_done - datetime.timedelta(seconds=record.runtime)
    ok = record.state == states.SUCCESS
    value = loads(record.result, record.content_type, app.result_accept_content()) if (
        record.result is not None) else None
    errors = []
    if not ok:
        kind = (f"{value['exc_module']}.{value['exc_type']}" if is_exception_data(value)
                else "djqueue.exceptions.TaskRevokedError")
        errors.append(TaskError(exception_class_path=kind, traceback=record.traceback or ""))
    result = TaskResult(
        task=task, id=result_id,
        status=TaskResultStatus.SUCCESSFUL if ok else TaskResultStatus.FAILED,
        enqueued_at=enqueued_at(result_id), started_at=started, finished_at=record.date_done,
        last_attempted_at=started, args=_json(record.args, []), kwargs=_json(record.kwargs, {}),
        backend=backend.alias, errors=errors,
        worker_ids=record.workers.split("\n") if record.workers else (
            [record.worker] if started is not None and record.worker else []),
    )
    if ok:
        object.__setattr__(result, "_return_value", value)
    return result


def _waiting(backend: BaseTaskBackend, task: Task, result_id: str, message: dict[str, Any] | None,
             record: ResultRecord | None) -> TaskResult:
    if message is None:  # a record (STARTED, RETRY) and no message: between two writes
        status = (TaskResultStatus.RUNNING if record and record.state == states.STARTED
                  else TaskResultStatus.READY)
        return TaskResult(
            task=task, id=result_id, status=status, enqueued_at=enqueued_at(result_id),
            started_at=None, finished_at=None, last_attempted_at=None, args=[], kwargs={},
            backend=backend.alias, errors=[], worker_ids=[])
    running = message["state"] == "started"
    args, kwargs, earlier = _body(message["body"], message["content_type"])
    started = message["started_at"] if running else None
    return TaskResult(
        task=task, id=result_id,
        status=TaskResultStatus.RUNNING if running else TaskResultStatus.READY,
        enqueued_at=enqueued_at(result_id) or message["created_at"], started_at=started,
        finished_at=None, last_attempted_at=started, args=args, kwargs=kwargs,
        backend=backend.alias, errors=[],
        worker_ids=[*earlier, message["worker"]] if running else earlier,
    )
