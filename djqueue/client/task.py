"""The ``Task`` class: what ``@task`` turns a function into."""

from __future__ import annotations

import contextvars
import datetime
import functools
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from . import annotations, hooks
from .asynchronous import AsyncCalls
from .call_checks import check_arguments, check_time_limits
from .context import Context
from .headers import take_headers
from ..exceptions import MaxRetriesExceededError, Replaced, Retry
from ..canvas import Signature, chunks, xmap, xstarmap
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
    "rate_limit_scope": None,
    "concurrency_limit": None,
    "unique": None,
    "on_duplicate": "result",
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
    "throws": (),
    "async_concurrency": 1,
    "trail": True,
}

#: The request of the coroutine task running in this context (``async def`` tasks run on an event
#: loop in another thread than the one that pushed their request; see djqueue.worker.coroutines).
RUNNING_REQUEST: contextvars.ContextVar[Context] = contextvars.ContextVar("djqueue_request")


_DEFAULT = object()


class Task(AsyncCalls):
    """A registered task. Instances are created by ``@task``; subclass it for ``base=``.

    The handlers (``before_start``, ``on_success``, ``on_retry``, ``on_failure``,
    ``after_return``) do nothing here; a subclass overrides those it needs, with Celery's
    signatures (see :mod:`djqueue.client.hooks` for when each runs).
    """

    _djqueue_base_task = True  # where hooks.hooks_of() stops looking for overridden handlers
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
    #: "worker" (each worker's own limit, Celery's) or "cluster"; None: DJQUEUE_RATE_LIMIT_SCOPE.
    rate_limit_scope: str | None = None
    #: At most this many running at once per concurrency key, across the cluster (djqueue.flow).
    concurrency_limit: int | None = None
    #: "waiting", "running" or seconds: one message per unique key (djqueue.client.unique).
    unique: str | float | None = None
    #: A call whose unique key is held: "result" (the holder's AsyncResult) or "raise".
    on_duplicate: str = "result"
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
    #: Expected exceptions: the task still fails, and the worker logs it at INFO without the
    #: traceback ("raised expected"), as Celery does.
    throws: tuple[type[BaseException], ...] = ()
    #: For an ``async def`` task: how many of its calls one pool process may run at once.
    async_concurrency: int = 1
    #: Record the results of what a call sends while it runs among its children (Celery's).
    trail: bool = True
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

    def push_request(self, message_headers: Mapping[str, Any] | None = None, /,
                     **fields: Any) -> None:
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append(Context(message_headers, task=self.name, called_directly=False, **fields))

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
        if self.typing:
            check_arguments(self, args or (), kwargs or {})
        if options.get("shadow") is None and type(self).shadow_name is not Task.shadow_name:
            options["shadow"] = self.shadow_name(args, kwargs, options)
        if self.app.conf.CELERY_ALWAYS_EAGER:
            return self.apply(args, kwargs, task_id=task_id, **options)
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

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """Celery 5.4's ``delay()`` once the current transaction of the ``default`` database
        commits (at once outside one); returns None. ``delay()`` inside ``atomic()`` already
        commits or rolls back with the transaction and returns the result: use this one when
        the transaction is on another database than the broker's
        (``BROKER_URL = "django://<alias>"``)."""
        transaction.on_commit(functools.partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``apply_async()`` once the current transaction commits (see :meth:`delay_on_commit`)."""
        transaction.on_commit(functools.partial(self.apply_async, *args, **kwargs))

    def shadow_name(self, args: Any, kwargs: Any, options: Mapping[str, Any]) -> str | None:
        """Override to give calls the name logs show (``apply_async(shadow=…)`` wins)."""
        return None

    # The life cycle: handlers a subclass may override (see djqueue.client.hooks).

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Run before the body, in the worker."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Run when the body returned ``retval``."""

    def on_retry(self, exc: BaseException | None, task_id: str, args: Any, kwargs: Any,
                 einfo: hooks.ExceptionInfo) -> None:
        """Run when the call is retried; ``exc`` is the one given to ``retry()``."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: hooks.ExceptionInfo) -> None:
        """Run when the call failed with ``exc``."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: None) -> None:
        """Run last, after success or failure: ``retval`` is the value or the exception."""

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Store ``state`` (any name, e.g. ``"PROGRESS"``, up to 50 characters) and ``meta`` for
        the running call (or ``task_id``) now: ``AsyncResult.state`` and ``.info`` read them
        until the call's final state replaces them."""
        if not isinstance(state, str) or not 0 < len(state) <= 50:
            raise ValueError(
                f"update_state() needs a state name of 1 to 50 characters, not {state!r}")
        hooks.store_state(self, task_id, state, meta)

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
        """Run the task in this process, with its handlers, and return an :class:`EagerResult`.

        With ``throw`` (default ``CELERY_EAGER_PROPAGATES_EXCEPTIONS``) the task's exception is
        raised here instead of being kept in the result. ``headers``, ``shadow`` and
        ``ignore_result`` are seen in ``self.request`` as in a worker.
        """
        self.annotate()
        if throw is None:
            throw = self.app.conf.CELERY_EAGER_PROPAGATES_EXCEPTIONS
        return hooks.apply(self, args, kwargs, task_id or str(uuid.uuid4()), throw,
                           take_headers(dict(options)), options)

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

    def replace(self, sig: Signature) -> Any:
        """Replace the running task with ``sig``, which takes over its task id, its callbacks,
        errbacks, chord and the rest of its chain (Celery's ``Task.replace``). In a worker it
        raises: the task ends without a result of its own, and ``sig`` is written in the round
        that acknowledges it. A group becomes a chord whose body returns the group's results
        (as Celery's), so what followed the task receives them. Run eagerly, ``sig`` runs here
        and its value is returned."""
        if self.request.is_eager or self.request.called_directly:
            return sig.apply().get()
        if sig.subtask_type == "group":  # a chord: its body reads the members' results
            self.app.backend.ensure_chords_allowed()
        raise Replaced(sig)

    def map(self, it: Iterable[Any]) -> xmap:
        """One task calling this one with each item: ``square.map([1, 2, 3])``."""
        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Iterable[Any]]) -> xstarmap:
        """One task calling this one with each item as arguments: ``add.starmap([(1, 2)])``."""
        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Iterable[Any]], n: int) -> chunks:
        """The argument tuples ``it`` in tasks of ``n`` calls each, sent as a group."""
        return chunks(self.s(), it, n, app=self.app)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, app=self.app, task_name=self.name)


def build_task(app: App, fun: Callable[..., Any], **options: Any) -> Task:
    """Make a :class:`Task` instance around ``fun`` with ``@task(...)`` options."""
    unknown = set(options) - set(TASK_OPTIONS)
    if unknown:
        raise TypeError(
            f"@task got unknown option(s) {', '.join(sorted(unknown))}; "
            f"known options are {', '.join(sorted(TASK_OPTIONS))}"
        )
    base = options.pop("base", None) or Task
    if not (isinstance(base, type) and issubclass(base, Task)):
        raise TypeError(f"@task(base=...) must be a subclass of djqueue's Task (app.Task), "
                        f"not {base!r}")
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
    check_time_limits(options.get("soft_time_limit", getattr(base, "soft_time_limit", None)),
                      options.get("time_limit", getattr(base, "time_limit", None)), f"Task {name}")
    cls = type(fun.__name__, (base,), attrs)
    instance = cls()
    instance.app = app
    return instance
