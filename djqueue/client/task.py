"""The ``Task`` class: what ``@task`` turns a function into."""

from __future__ import annotations

import contextvars
import datetime
import inspect
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from asgiref.sync import async_to_sync

from . import annotations
from .asynchronous import AsyncCalls
from .. import states
from ..exceptions import MaxRetriesExceededError, Retry
from ..canvas import Signature
from ..result import AsyncResult, EagerResult

if TYPE_CHECKING:
    from .base import App

#: Options ``@task(...)`` accepts, with their defaults. Options that a worker does not use yet are
#: still stored so code written for Celery keeps working as features arrive.
TASK_OPTIONS: dict[str, Any] = {
    "name": None,
    "bind": False,
    "base": None,
    "queue": None,
    "priority": None,
    "ignore_result": None,
    "store_errors_even_if_ignored": None,
    "track_started": None,
    "acks_late": None,
    "rate_limit": None,
    "max_retries": 3,
    "default_retry_delay": 180,
    "autoretry_for": (),
    "retry_kwargs": None,
    "retry_backoff": False,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "time_limit": None,
    "soft_time_limit": None,
    "expires": None,
    "serializer": None,
    "typing": True,
    "async_concurrency": 1,
}

#: The request of the coroutine task running in this context (``async def`` tasks run on an event
#: loop in another thread than the one that pushed their request; see djqueue.worker.coroutines).
RUNNING_REQUEST: contextvars.ContextVar[Context] = contextvars.ContextVar("djqueue_request")


_DEFAULT = object()


class Context:
    """``task.request``: what the running task knows about its own call."""

    def __init__(self, **fields: Any) -> None:
        self.id: str | None = None
        self.task: str | None = None
        self.args: list[Any] = []
        self.kwargs: dict[str, Any] = {}
        self.retries = 0
        self.is_eager = False
        self.eta: str | None = None
        self.expires: str | None = None
        self.hostname: str | None = None
        self.delivery_info: dict[str, Any] = {}
        self.called_directly = True
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"<Context {self.__dict__!r}>"


class Task(AsyncCalls):
    """A registered task. Instances are created by ``@task``; subclass it for ``base=``."""

    name: str = ""
    app: App
    bind: bool = False
    queue: str | None = None
    priority: int | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    track_started: bool | None = None
    acks_late: bool | None = None
    rate_limit: str | None = None
    max_retries: int | None = 3
    default_retry_delay: float = 180
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] | None = None
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | datetime.datetime | None = None
    serializer: str | None = None
    typing: bool = True
    #: For an ``async def`` task: how many of its calls one pool process may run at once.
    async_concurrency: int = 1
    #: Store the arguments with the result as JSON, whole, rather than as a shortened repr
    #: (Django's ``TaskResult.args`` is read back from them: djqueue.contrib.django_tasks).
    arguments_as_json: bool = False

    def __init__(self) -> None:
        self._local = threading.local()

    def run(self, *args: Any, **kwargs: Any) -> Any:  # replaced by the decorated function
        raise NotImplementedError("Tasks must define the run method.")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now, as a plain function call (Celery semantics)."""
        return self.run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # The request context of the call running in this thread.

    @property
    def request(self) -> Context:
        stack = getattr(self._local, "stack", None)
        if stack:
            return stack[-1]
        running = RUNNING_REQUEST.get(None)
        return running if running is not None and running.task == self.name else Context(
            task=self.name)

    def push_request(self, **fields: Any) -> None:
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append(Context(task=self.name, called_directly=False, **fields))

    def pop_request(self) -> None:
        self._local.stack.pop()

    # Settings resolved against the app's configuration.

    def annotate(self) -> Task:
        """Lay the current ``CELERY_ANNOTATIONS`` over this task's attributes (see
        :mod:`djqueue.client.annotations`); the app does this whenever it uses the task."""
        annotations.apply(self, self.app.conf.CELERY_ANNOTATIONS)
        return self

    def resolved(self, option: str, setting: str) -> Any:
        value = getattr(self, option)
        return getattr(self.app.conf, setting) if value is None else value

    # Calling.

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Shortcut for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
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
        **options: Any,
    ) -> AsyncResult:
        """Enqueue a call. Inside ``transaction.atomic()`` the message commits or rolls back with
        the caller's transaction. With ``CELERY_ALWAYS_EAGER`` the task runs here instead."""
        self.annotate()
        if self.app.conf.CELERY_ALWAYS_EAGER:
            return self.apply(args, kwargs, task_id=task_id)
        return self.app.send_task(
            self.name,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            priority=priority,
            task_id=task_id,
            serializer=serializer,
            _task=self,
            **options,
        )

    # Signatures (see djqueue.canvas).

    def signature(
        self,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        immutable: bool = False,
    ) -> Signature:
        """This task's call, written down to be sent later."""
        return Signature(self, args, kwargs, options, immutable=immutable, app=self.app)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """``add.s(2, 2)``: a signature; arguments given when it is sent are added."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """``add.si(2, 2)``: an immutable signature; it ignores arguments given when sent."""
        return self.signature(args, kwargs, immutable=True)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task in this process and return an :class:`EagerResult`.

        With ``throw`` (default ``CELERY_EAGER_PROPAGATES_EXCEPTIONS``) the task's exception is
        raised here instead of being kept in the result.
        """
        self.annotate()
        task_id = task_id or str(uuid.uuid4())
        args, kwargs = list(args or ()), dict(kwargs or {})
        if throw is None:
            throw = self.app.conf.CELERY_EAGER_PROPAGATES_EXCEPTIONS
        retries = 0
        while True:  # an eager retry runs again at once
            self.push_request(id=task_id, args=args, kwargs=kwargs, is_eager=True, retries=retries)
            try:
                value = self.run(*args, **kwargs)
                if inspect.iscoroutine(value):  # an async def task, run here to its end
                    value = async_to_sync(_awaited)(value)
            except Retry as retry:
                args = list(retry.call_args) if retry.call_args is not None else args
                kwargs = dict(retry.call_kwargs) if retry.call_kwargs is not None else kwargs
                retries += 1
                continue
            except Exception as exc:
                if throw:
                    raise
                return EagerResult(task_id, exc, states.FAILURE, traceback.format_exc())
            finally:
                self.pop_request()
            return EagerResult(task_id, value, states.SUCCESS)

    def retry(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime.datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None | object = _DEFAULT,
    ) -> Retry:
        """Ask for another attempt of the running task; raises :class:`Retry`.

        The message goes back to the queue with a new available-at time (``eta``, or now +
        ``countdown``, or now + ``default_retry_delay``); no worker sleeps meanwhile. Once
        ``max_retries`` attempts were retried (``None``: no limit), ``exc`` is raised instead, or
        :class:`MaxRetriesExceededError` when there is none.
        """
        request = self.request
        limit = self.max_retries if max_retries is _DEFAULT else max_retries
        if request.called_directly:
            raise exc if exc is not None else RuntimeError(
                f"{self.name}.retry() called outside a worker: the task is not running as a task"
            )
        if limit is not None and request.retries >= limit:  # type: ignore[operator]
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{request.kwargs}"
            )
        if eta is None:
            delay = self.default_retry_delay if countdown is None else countdown
            eta = timezone.now() + datetime.timedelta(seconds=delay)
        retry = Retry(exc=exc, when=eta, args=None if args is None else list(args),
                      kwargs=None if kwargs is None else dict(kwargs))
        if throw:
            raise retry
        return retry

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, app=self.app, task_name=self.name)


async def _awaited(coroutine: Any) -> Any:
    return await coroutine


def build_task(app: App, fun: Callable[..., Any], **options: Any) -> Task:
    """Make a :class:`Task` instance around ``fun`` with ``@task(...)`` options."""
    unknown = set(options) - set(TASK_OPTIONS)
    if unknown:
        raise TypeError(
            f"@task got unknown option(s) {', '.join(sorted(unknown))}; "
            f"known options are {', '.join(sorted(TASK_OPTIONS))}"
        )
    base = options.pop("base", None) or Task
    bind = bool(options.pop("bind", False))
    name = options.pop("name", None) or f"{fun.__module__}.{fun.__name__}"
    attrs: dict[str, Any] = {
        "name": name,
        "bind": bind,
        "run": fun if bind else staticmethod(fun),
        "__doc__": fun.__doc__,
        "__module__": fun.__module__,
        "__wrapped__": fun,
        "__qualname__": fun.__qualname__,
        **options,
    }
    cls = type(fun.__name__, (base,), attrs)
    instance = cls()
    instance.app = app
    return instance
