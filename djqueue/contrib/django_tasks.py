"""A backend for Django's ``django.tasks`` (Django 6): tasks declared with Django's ``@task`` go
through djqueue's message table and run in ``manage.py celery worker`` beside Celery-style tasks.

```python
TASKS = {
    "default": {
        "BACKEND": "djqueue.contrib.django_tasks.DjqueueBackend",
        "QUEUES": ["default", "emails"],          # Django's check: queue_name must be one of them
        "OPTIONS": {"queues": {"emails": "mail"}}, # see OPTIONS below
    }
}
```

- ``enqueue()``/``aenqueue()`` insert a message in the caller's transaction, as ``delay()`` does;
  ``task_enqueued`` is sent in the caller when that commits (at once outside a transaction; never
  for a rollback), ``task_started`` and ``task_finished`` in the worker's pool process around the
  call, with the ``TaskResult`` as Django describes it, when they reach someone besides Django's
  own log receivers (:func:`listened`).
- ``queue_name`` is the djqueue queue of that name, except Django's ``"default"``, which is
  ``CELERY_DEFAULT_QUEUE`` (``"celery"``), so a worker without ``-Q`` runs it; ``OPTIONS["queues"]``
  maps any other name.
- ``priority`` −100…100 becomes djqueue's 0…255 by ``round((p + 100) * 255 / 200)``: −100 → 0,
  0 → 128, 100 → 255, order kept (Celery-style tasks default to 0, below Django's default).
- ``run_after`` is the message's ``eta``. ``takes_context`` gets a ``TaskContext`` whose
  ``attempt`` is djqueue's attempt number (retries + 1). A task may ``raise Retry(when=…)``
  (:class:`djqueue.exceptions.Retry`) for another attempt; ``worker_ids`` names each attempt's
  worker.
- ``get_result()`` reads djqueue's message row while the task waits or runs, and its result row
  (``CELERY_RESULT_BACKEND``) once it finished; see :mod:`djqueue.contrib.django_results`.

OPTIONS (checked by ``manage.py check``, ``djqueue.E170``): ``queues`` (Django queue name →
djqueue queue), ``acks_late``, ``time_limit``, ``soft_time_limit`` (seconds) and
``async_concurrency`` (coroutines of one ``async def`` task per pool process), applied to every
task of the backend as the ``@task`` options of those names are.
"""

from __future__ import annotations

import django

if django.VERSION < (6, 0):
    raise ImportError(
        "djqueue.contrib.django_tasks is a backend for django.tasks, which Django 6.0 added; "
        f"this is Django {django.get_version()}. Upgrade Django, or use djqueue's own @task."
    )

import logging
import math
from functools import partial
from collections.abc import Callable, Mapping
from typing import Any

from django.core import checks
from django.db import transaction
from django.tasks import TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, Task, TaskContext, TaskError
from django.dispatch import Signal
from django.tasks.signals import (
    log_task_finished, log_task_started, task_enqueued, task_finished, task_started,
)
from django.utils import timezone

from ..client import identifiers
from ..client.base import app
from ..client.task import Task as CeleryTask
from ..client.task import build_task
from ..exceptions import InvalidIdentifier, Retry
from . import django_results

__all__ = ["DjqueueBackend", "DjqueueTask", "djqueue_priority"]

#: The OPTIONS the backend takes, with a check of each value (None: fine, else the problem).
_LIMIT = "a positive number of seconds, or None"
OPTION_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "queues": lambda v: None if isinstance(v, Mapping) and all(
        isinstance(k, str) and isinstance(q, str) for k, q in v.items())
    else "a dict of Django queue names to djqueue queue names",
    "acks_late": lambda v: None if isinstance(v, bool) else "True or False",
    "time_limit": lambda v: None if v is None or (
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf)
    else _LIMIT,
    "soft_time_limit": lambda v: None if v is None or (
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf)
    else _LIMIT,
    "async_concurrency": lambda v: None if isinstance(v, int) and not isinstance(v, bool)
    and 1 <= v <= 256 else "a whole number from 1 to 256",
}


def djqueue_priority(priority: int) -> int:
    """Django's priority (−100…100, higher first) as djqueue's (0…255, higher first)."""
    return round((priority - TASK_MIN_PRIORITY) * 255 / (TASK_MAX_PRIORITY - TASK_MIN_PRIORITY))


class DjqueueTask(Task):
    """Django's ``Task`` that, once declared, is also registered with djqueue's app under its
    module path, so that workers (which import the project's task modules) can run it."""

    __slots__ = ()

    def __post_init__(self) -> None:
        Task.__post_init__(self)  # validation; a dataclass with slots has no bare super()
        django_results.register(self, _runner)


def _runner(task: DjqueueTask) -> CeleryTask:
    """The djqueue task that runs ``task`` in a worker: a plain or an ``async def`` function,
    as ``task.func`` is, sending Django's signals around the call when they reach anyone
    (:func:`listened`). Django's ``TaskResult`` is built only for them and for a task that
    ``takes_context``: a task with neither is called as a djqueue task is."""
    backend = task.get_backend()
    sender = type(backend)
    options = {name: backend.options[name] for name in
               ("acks_late", "time_limit", "soft_time_limit", "async_concurrency")
               if name in backend.options}
    if django_results.is_coroutine(task.func):
        async def run_async(self: CeleryTask, *args: Any, **kwargs: Any) -> Any:
            started, finished = listened(task_started, sender), listened(task_finished, sender)
            if not (started or finished or task.takes_context):
                return await task.func(*args, **kwargs)
            result = _running(task, self, args, kwargs)
            if started:
                await task_started.asend(sender, task_result=result)
            try:
                value = await task.func(*_context(task, result), *args, **kwargs)
            except BaseException as exc:
                if _failed(result, exc) and finished:
                    await task_finished.asend(sender, task_result=result)
                raise
            _succeeded(result, value)
            if finished:
                await task_finished.asend(sender, task_result=result)
            return value

        run: Callable[..., Any] = run_async
    else:
        def run(self: CeleryTask, *args: Any, **kwargs: Any) -> Any:
            started, finished = listened(task_started, sender), listened(task_finished, sender)
            if not (started or finished or task.takes_context):
                return task.func(*args, **kwargs)
            result = _running(task, self, args, kwargs)
            if started:
                task_started.send(sender, task_result=result)
            try:
                value = task.func(*_context(task, result), *args, **kwargs)
            except BaseException as exc:
                if _failed(result, exc) and finished:
                    task_finished.send(sender, task_result=result)
                raise
            _succeeded(result, value)
            if finished:
                task_finished.send(sender, task_result=result)
            return value

    run.__name__ = run.__qualname__ = task.func.__name__
    run.__module__ = task.func.__module__
    run.__doc__ = task.func.__doc__
    adapter = build_task(app, run, name=task.module_path, bind=True, **options)
    adapter.arguments_as_json = True
    return adapter


#: Django's own receivers of its task signals, which only log the task's state to the
#: ``django.tasks`` logger.
_DJANGO_LOG_RECEIVERS = {task_started: log_task_started, task_finished: log_task_finished}
_DJANGO_TASKS_LOGGER = logging.getLogger("django.tasks")


def listened(signal: Signal, sender: type) -> bool:
    """Whether sending ``signal`` in a worker reaches anyone: any receiver but Django's own log
    receiver, or that one too when the project configured the ``django.tasks`` logger (a level
    or handlers of its own in ``LOGGING``). djqueue's worker logs each task itself (Celery's
    ``received``/``succeeded``/``raised`` lines at ``-l``), so Django's duplicate lines, which
    Django's default logging would write at INFO whatever ``-l`` says, cost nothing unless
    asked for. Asked at each call: receivers may connect at any time."""
    # Django's own Signal.has_listeners reads the same private list; it cannot leave one out.
    sync_receivers, async_receivers = signal._live_receivers(sender)
    if async_receivers:
        return True
    own = _DJANGO_LOG_RECEIVERS.get(signal)
    for receiver in sync_receivers:
        if receiver is not own or _DJANGO_TASKS_LOGGER.handlers or _DJANGO_TASKS_LOGGER.level:
            return True
    return False


def _running(task: DjqueueTask, adapter: CeleryTask, args: Any, kwargs: Any) -> TaskResult:
    request = adapter.request
    now = timezone.now()
    return TaskResult(
        task=task, id=request.id, status=TaskResultStatus.RUNNING,
        enqueued_at=django_results.enqueued_at(request.id), started_at=now, finished_at=None,
        last_attempted_at=now, args=list(args), kwargs=dict(kwargs), backend=task.backend,
        errors=[], worker_ids=[*(request.workers or ()), request.hostname or ""],
    )


def _context(task: DjqueueTask, result: TaskResult) -> tuple[Any, ...]:
    return (TaskContext(task_result=result),) if task.takes_context else ()


def _failed(result: TaskResult, exc: BaseException) -> bool:
    """Record ``exc`` as the end of the attempt; False for djqueue's :class:`Retry` (the task
    goes on in another attempt: it has not finished)."""
    if isinstance(exc, Retry):
        return False
    kind = type(exc)
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "status", TaskResultStatus.FAILED)
    result.errors.append(TaskError(exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                                   traceback=django_results.format_traceback(exc)))
    return True


def _succeeded(result: TaskResult, value: Any) -> None:
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "_return_value", value)


class DjqueueBackend(BaseTaskBackend):
    """Django's task backend on djqueue (see the module's documentation)."""

    task_class = DjqueueTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def queue_for(self, queue_name: str) -> str:
        """The djqueue queue of Django's ``queue_name``."""
        mapped = self.options.get("queues")
        if isinstance(mapped, Mapping) and queue_name in mapped:
            return mapped[queue_name]
        return app.conf.CELERY_DEFAULT_QUEUE if queue_name == "default" else queue_name

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Insert the message (in the caller's transaction, if any) and send ``task_enqueued``."""
        self.validate_task(task)
        django_results.register(task, _runner)
        task_id = django_results.new_id()
        result = TaskResult(  # first: it refuses arguments that are not JSON
            task=task, id=task_id, status=TaskResultStatus.READY,
            enqueued_at=django_results.enqueued_at(task_id), started_at=None, finished_at=None,
            last_attempted_at=None, args=list(args), kwargs=dict(kwargs), backend=self.alias,
            errors=[], worker_ids=[],
        )
        app.send_task(task.module_path, result.args, result.kwargs, eta=task.run_after,
                      queue=self.queue_for(task.queue_name),
                      priority=djqueue_priority(task.priority), task_id=task_id,
                      serializer="json")
        # Once the message is there for workers to see: at the caller's commit (at once outside a
        # transaction); never for a message rolled back.
        transaction.on_commit(partial(task_enqueued.send, type(self), task_result=result),
                              using=app.conf.broker_alias)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The task's state from djqueue's rows; ``TaskResultDoesNotExist`` for an unknown id."""
        return django_results.read(self, result_id)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """``manage.py check``: the OPTIONS and QUEUES djqueue can use."""
        errors = []
        where = f"TASKS[{self.alias!r}]"
        for name, value in self.options.items():
            problem = (OPTION_CHECKS[name](value) if name in OPTION_CHECKS
                       else "not an option of this backend")
            if problem:
                errors.append(checks.Error(
                    f"{where}['OPTIONS'][{name!r}] = {value!r}: {problem}.",
                    hint=f"The options are {', '.join(sorted(OPTION_CHECKS))}.",
                    id="djqueue.E170"))
        for queue in sorted(self.queues, key=str):
            try:
                identifiers.check("queue name", self.queue_for(queue) if isinstance(queue, str)
                                  else queue, identifiers.MAX_QUEUE)
            except InvalidIdentifier as exc:
                errors.append(checks.Error(f"{where}['QUEUES']: {exc}.", id="djqueue.E171"))
        if not app.backend.enabled:
            errors.append(checks.Warning(
                f"{where} uses djqueue, which keeps no results: get_result() and refresh() "
                "cannot say how a task ended.",
                hint='Set CELERY_RESULT_BACKEND = "database".', id="djqueue.W170"))
        return errors

