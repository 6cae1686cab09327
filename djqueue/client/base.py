"""The App: task registry, configuration, enqueueing by name and task discovery."""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, overload

from django.apps import apps as django_apps
from django.utils import timezone

from . import celery_app, identifiers, launch, publishing, routing, tracing, unique
from .call_checks import check_time_limits
from .control import Control
from .headers import take_headers
from .result_graph import add_to_trail
from ..broker.rows import MessageHead, NewMessage
from ..backends import ResultBackend, backend_from_setting, backend_key
from ..conf import Settings
from ..exceptions import NotRegistered
from ..result import AsyncResult
from ..serialization import dumps
from ..signals import before_task_publish
from .signature import Signature
from .task import Task, build_task

logger = logging.getLogger("djqueue.app")


@dataclass(slots=True)
class Batch:
    """What every message of one send shares: the settings that shape a message, read once, and
    the time it is sent. A ``group`` sends all of its messages with one batch; ``heads`` keeps the
    :class:`MessageHead` of each task called without call options, so its other calls reuse it
    (only when routing cannot depend on the arguments, i.e. no router is a function)."""

    routers: list[Any]
    queue: str
    priority: int | None
    serializer: str
    now: datetime.datetime
    heads: dict[str, tuple[MessageHead, str]] | None  # task name -> (head, serializer)


class TaskRegistry(dict[str, Task]):
    """Tasks by name. A task read from here has the current ``CELERY_ANNOTATIONS`` applied."""

    def __missing__(self, name: str) -> Task:
        raise NotRegistered(name)

    def __getitem__(self, name: str) -> Task:
        return super().__getitem__(name).annotate()

    def get(self, name: str, default: Task | None = None) -> Task | None:  # type: ignore[override]
        return self[name] if name in self else default


class App:
    """Holds the registered tasks and the settings; ``djqueue.app`` is the one instance."""

    #: The base class of tasks, for ``class MyTask(app.Task)`` and ``@app.task(base=MyTask)``.
    Task = Task

    def __init__(self, main: str = "djqueue", conf: Settings | None = None) -> None:
        self.main = main
        self.conf = Settings() if conf is None else conf
        self._tasks = TaskRegistry()
        self._discovered = False
        self._backend: tuple[tuple[object, ...], ResultBackend] | None = None

    def __repr__(self) -> str:
        return f"<App {self.main}>"

    # Tasks.

    @property
    def discovered(self) -> bool:
        """Whether the project's task modules were imported (on first use of ``tasks``)."""
        return self._discovered

    @property
    def tasks(self) -> TaskRegistry:
        """Every registered task, after importing the project's task modules (see autodiscover)."""
        if not self._discovered:
            self.autodiscover()
        return self._tasks

    def register(self, task: Task) -> Task:
        self._tasks[task.name] = task
        return task

    @overload
    def task(self, fun: Callable[..., Any]) -> Task: ...
    @overload
    def task(self, **options: Any) -> Callable[[Callable[..., Any]], Task]: ...

    def task(self, fun: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Decorator making a function a task; works bare (``@task``) and with options."""

        def decorate(f: Callable[..., Any]) -> Task:
            return self.register(build_task(self, f, **options))

        return decorate(fun) if fun is not None else decorate

    def autodiscover(self) -> None:
        """Import the ``tasks`` module of every installed app, every ``CELERY_IMPORTS`` module,
        then what ``app.autodiscover_tasks()`` and ``CELERY_INCLUDE`` name (client/celery_app.py).

        This is the only way task code gets imported: a worker never imports a module because a
        message names it. An error inside a tasks module is raised, not hidden.
        """
        self._discovered = True
        modules = []
        for config in django_apps.get_app_configs():
            name = f"{config.name}.tasks"
            if importlib.util.find_spec(name) is not None:
                modules.append(name)
        imports = self.conf.CELERY_IMPORTS or ()
        modules.extend([imports] if isinstance(imports, str) else imports)
        modules.extend(celery_app.requested_modules(self.conf))
        for name in modules:
            importlib.import_module(name)
        celery_app.register_pending()

    @property
    def control(self) -> Control:
        """Remote control of the workers: ``app.control.rate_limit(...)``, ``.inspect()``, …"""
        return Control(self)

    # Results.

    @property
    def backend(self) -> ResultBackend:
        """The result backend ``CELERY_RESULT_BACKEND`` names (rebuilt when its settings change)."""
        key = backend_key(self.conf)
        if self._backend is None or self._backend[0] != key:
            self._backend = (key, backend_from_setting(self.conf))
        return self._backend[1]

    def result_accept_content(self) -> list[str]:
        return list(self.conf.CELERY_ACCEPT_CONTENT or [])

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> AsyncResult:  # noqa: N802
        return AsyncResult(task_id, app=self, task_name=task_name)

    # Sending.

    def send_task(
        self,
        name: str,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime.datetime | None = None,
        expires: float | datetime.datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        task_id: str | None = None,
        serializer: str | None = None,
        _task: Task | None = None,
        add_to_parent: bool = True,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue a call to the task called ``name``; the task need not be importable here.
        A unique call (``unique_key``, ``unique``, ``on_duplicate``) whose key is held returns
        the holder's result (see :mod:`djqueue.client.unique`). Sent by a running task, the
        result is one of its children unless ``add_to_parent`` is False (Celery's)."""
        if not launch.WORKFLOW_OPTIONS.isdisjoint(options):  # link=, link_error=, …
            named = {"countdown": countdown, "eta": eta, "expires": expires, "queue": queue,
                     "priority": priority, "task_id": task_id, "serializer": serializer}
            call = Signature(name, args or (), kwargs, {
                **{k: v for k, v in named.items() if v is not None}, **options}, app=self)
            result = launch.apply_async(call)
            return add_to_trail(result, add_to_parent)  # type: ignore[return-value]
        uniqueness = (unique.from_options(options, _task)
                      if options or (_task is not None and _task.unique is not None) else None)
        message = self.build_message(
            name, args, kwargs, countdown=countdown, eta=eta, expires=expires, queue=queue,
            priority=priority, task_id=task_id, serializer=serializer, task=_task, options=options,
        )
        if uniqueness is not None:
            task_id = unique.publish(message, uniqueness, args or (), kwargs or {},
                                     self.conf.broker_alias)
            return add_to_trail(AsyncResult(task_id, app=self, task_name=name), add_to_parent)
        publishing.publish([message], using=self.conf.broker_alias)
        return add_to_trail(AsyncResult(message.task_id, app=self, task_name=name), add_to_parent)

    def batch(self) -> Batch:
        conf = self.conf
        routers = routing.routers(conf.CELERY_ROUTES)
        by_name = all(isinstance(router, Mapping) for router in routers)
        return Batch(
            routers, conf.CELERY_DEFAULT_QUEUE, conf.CELERY_DEFAULT_PRIORITY,
            conf.CELERY_TASK_SERIALIZER, timezone.now(),
            # Reusing a head skips build_message, where before_task_publish is sent.
            {} if by_name and not before_task_publish.receivers else None,
        )

    def build_message(
        self,
        name: str,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        *,
        countdown: float | None = None,
        eta: datetime.datetime | None = None,
        expires: float | datetime.datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        task_id: str | None = None,
        serializer: str | None = None,
        task: Task | None = None,
        options: Mapping[str, Any] | None = None,
        batch: Batch | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> NewMessage:
        """A message, encoded and routed, not yet written.

        ``task``'s own options (queue, priority, expires, serializer) apply where the call gives
        none; ``batch`` saves reading the settings again for each message of a group; ``fields``
        are a workflow's body fields (:mod:`djqueue.client.launch`).
        """
        # Names and ids are checked before any SQL, alike on every database (PostgreSQL would
        # refuse what SQLite stores); a group's calls that reuse this head are not checked again.
        identifiers.check("task name", name, identifiers.MAX_TASK_NAME)
        args, kwargs = list(args or ()), dict(kwargs or {})
        batch = batch or self.batch()
        time_limit = soft_time_limit = headers = flow_key = None
        if options:
            options = dict(options)
            time_limit = options.pop("time_limit", None)
            soft_time_limit = options.pop("soft_time_limit", None)
            headers = take_headers(options)
            flow_key = options.pop("concurrency_key", None)
            if options:
                raise TypeError(f"Unknown apply_async option(s): {', '.join(sorted(options))}")
        plain = (countdown is None and eta is None and expires is None and queue is None
                 and priority is None and serializer is None and time_limit is None
                 and soft_time_limit is None and flow_key is None)
        if task is not None:
            expires = task.expires if expires is None else expires
            serializer = serializer or task.serializer
            if time_limit is not None or soft_time_limit is not None:
                check_time_limits(
                    task.soft_time_limit if soft_time_limit is None else soft_time_limit,
                    task.time_limit if time_limit is None else time_limit, f"Call of {name}")
        else:
            check_time_limits(soft_time_limit, time_limit, f"Call of {name}")
        serializer = serializer or batch.serializer
        now = batch.now
        if countdown is not None and eta is not None:
            raise ValueError("Give countdown or eta, not both")
        available_at = now
        if countdown is not None:
            available_at = now + datetime.timedelta(seconds=countdown)
        elif eta is not None:
            available_at = _aware(eta, self.conf.timezone)
        expires_at = None
        if isinstance(expires, (int, float)):
            expires_at = now + datetime.timedelta(seconds=expires)
        elif isinstance(expires, datetime.datetime):
            expires_at = _aware(expires, self.conf.timezone)
        elif expires is not None:
            raise TypeError(f"expires must be seconds or a datetime, not {expires!r}")
        task_options = {"queue": task.queue, "priority": task.priority} if task else {}
        queue_name, priority_value = routing.route(
            name, args, kwargs,
            routes=batch.routers,
            call_queue=queue,
            call_priority=priority,
            task_options=task_options,
            default_queue=batch.queue,
            default_priority=batch.priority,
        )
        routing.ensure_known(queue_name, self.conf)
        identifiers.check("queue name", queue_name, identifiers.MAX_QUEUE)
        if task_id:
            task_id = identifiers.check("task id", str(task_id), identifiers.MAX_TASK_ID)
        payload: dict[str, Any] = {"args": args, "kwargs": kwargs}
        if fields:
            payload.update(fields)
        if countdown is not None or eta is not None:
            payload["eta"] = available_at.isoformat()
        if expires_at is not None:
            payload["expires"] = expires_at.isoformat()
        if headers:
            payload["headers"] = headers
        if before_task_publish.receivers:  # receivers may add headers (a trace's context)
            task_id = task_id or str(uuid.uuid4())
            tracing.before_publish(name, task_id, payload, queue_name, priority_value,
                                   (time_limit, soft_time_limit))
        content_type, body = dumps(payload, serializer)
        if flow_key is not None:  # at most concurrency_limit of one key run at once
            flow_key = identifiers.check("concurrency key", str(flow_key), identifiers.MAX_TASK_ID)
        elif task is not None and task.concurrency_limit:
            flow_key = ""  # the task as a whole
        head = MessageHead(name, queue_name, priority_value, available_at, expires_at,
                           content_type, time_limit, soft_time_limit, flow_key)
        if plain and batch.heads is not None and expires_at is None:
            batch.heads[name] = (head, serializer)
        return NewMessage(str(task_id or uuid.uuid4()), body, head)


def _aware(value: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime:
    """Naive datetimes are read in the app's time zone (UTC unless configured otherwise)."""
    if timezone.is_naive(value):
        return timezone.make_aware(value, zone)
    return value


app = App(celery_app.main_name(), conf=celery_app.CONF)
