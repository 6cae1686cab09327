"""Celery's canvas basics: signatures (``task.s()``, ``task.si()``) and ``group``.

A :class:`Signature` is a task call written down to be made later: the task's name, some
arguments and call options. ``group`` sends many signatures at once; on the database broker that
is one ``INSERT`` for the whole group, inside the caller's transaction like any other enqueue.
"""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .client import publishing
from .broker.rows import NewMessage
from .client.current import current_app
from .client.publishing import new_task_ids
from .result import AsyncResult, GroupResult
from .serialization import dumps

if TYPE_CHECKING:
    from .client.base import App, Batch
    from .client.task import Task

#: Call options that :meth:`App.build_message` takes by name; any other option travels in the
#: message's ``options``.
_MESSAGE_OPTIONS = ("countdown", "eta", "expires", "queue", "priority", "task_id", "serializer")


class Signature:
    """One task call, ready to be sent: ``add.s(2, 2)``, ``signature("tasks.add", (2, 2))``.

    Arguments given when it is sent are added to the stored ones (``add.s(2).delay(3)`` calls
    ``add(2, 3)``), unless the signature is immutable (``add.si(2, 2)``). Options given then
    override the stored ones.
    """

    def __init__(
        self,
        task: str | Task,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        immutable: bool = False,
        app: App | None = None,
    ) -> None:
        if app is None:
            app = getattr(task, "app", None) or current_app()
        self.app = app
        self.task: str = task if isinstance(task, str) else task.name
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and (
            other.task, other.args, other.kwargs, other.options, other.immutable
        ) == (self.task, self.args, self.kwargs, self.options, self.immutable)

    @property
    def type(self) -> Task:
        """The registered task this signature calls."""
        return self.app.tasks[self.task]

    def clone(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A copy with ``args``/``kwargs`` added (ignored when immutable) and ``options`` merged."""
        if self.immutable:
            args, kwargs = (), None
        return Signature(
            self.task,
            (*self.args, *args),
            {**self.kwargs, **(kwargs or {})},
            {**self.options, **options},
            immutable=self.immutable,
            app=self.app,
        )

    def set(self, **options: Any) -> Signature:
        """Change stored options in place (``add.s(2, 2).set(countdown=10)``); returns itself."""
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the call, with ``args``/``kwargs`` added to the stored ones."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """Send the call, as :meth:`Task.apply_async` does (eagerly with ``CELERY_ALWAYS_EAGER``)."""
        call = self.clone(args, kwargs, **options)
        task = self.app.tasks.get(call.task)
        if task is not None:
            return task.apply_async(call.args, call.kwargs, **call.options)
        return self.app.send_task(call.task, call.args, call.kwargs, **call.options)

    def apply(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """Run the call here and now; returns an :class:`EagerResult`."""
        call = self.clone(args, kwargs, **options)
        return call.type.apply(call.args, call.kwargs, **call.options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task function here, as a plain function call."""
        call = self.clone(args, kwargs)
        return call.type(*call.args, **call.kwargs)

    def build_message(self, batch: Batch, task_id: str) -> NewMessage:
        """The message this call becomes, not yet written; ``task_id`` unless the call names one.

        A call without options whose task the batch has already routed reuses that message head
        and only encodes its arguments: the common ``group(task.s(i) for i in …)``.
        """
        known = batch.heads.get(self.task) if batch.heads is not None and not self.options else None
        if known is not None:
            head, serializer = known
            body = dumps({"args": list(self.args), "kwargs": self.kwargs}, serializer)[1]
            return NewMessage(task_id, body, head)
        named = {key: self.options[key] for key in _MESSAGE_OPTIONS if key in self.options}
        extra = {k: v for k, v in self.options.items() if k not in _MESSAGE_OPTIONS}
        named.setdefault("task_id", task_id)
        return self.app.build_message(
            self.task, self.args, self.kwargs, task=self.app.tasks.get(self.task),
            options=extra, batch=batch, **named,
        )


def signature(
    varies: str | Task | Signature | Mapping[str, Any],
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    immutable: bool = False,
    app: App | None = None,
) -> Signature:
    """A :class:`Signature` from a task or task name, a signature (copied) or Celery's dict form
    (``{"task": ..., "args": ..., "kwargs": ..., "options": ..., "immutable": ...}``)."""
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, Mapping):
        return Signature(
            varies["task"], varies.get("args", ()), varies.get("kwargs"), varies.get("options"),
            immutable=bool(varies.get("immutable", False)), app=app,
        )
    return Signature(varies, args, kwargs, options, immutable=immutable, app=app)


#: Celery 3's name for :func:`signature`.
subtask = signature


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a group is built and sent.

    Each call of a group leaves objects that live as long as the group (its signature, message
    and result), tens of thousands for a big group: enough to set off several collections of
    the whole heap, a Django process's hundreds of thousands of objects each time, for nothing
    (none of them is garbage). That was a fifth of the time of a 20,000-task group. Reference
    counting still frees what is dropped meanwhile; a collection that was due runs after.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class group:  # noqa: N801 - Celery's name
    """Signatures sent together: ``group(add.s(i, i) for i in range(100)).apply_async()``.

    The whole group is inserted with one statement, so it commits (or rolls back) as one, and the
    returned :class:`GroupResult` answers for all of its tasks with one query at a time.
    """

    def __init__(self, *tasks: Signature | Iterable[Signature], app: App | None = None) -> None:
        with _gc_paused():
            if len(tasks) == 1 and not isinstance(tasks[0], (Signature, Mapping)):
                tasks = tuple(tasks[0])  # group(generator) as well as group(sig, sig, ...)
            # Signatures are kept as given, as Celery does: copying each costs more than sending.
            self.tasks = [t if isinstance(t, Signature) else signature(t, app=app) for t in tasks]
        if app is None:
            app = self.tasks[0].app if self.tasks else current_app()
        self.app = app

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Signature]:
        return iter(self.tasks)

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        """Send every task of the group (``args``/``kwargs`` added to each, ``options`` merged)."""
        if self.app.conf.CELERY_ALWAYS_EAGER:
            return self.apply(args, kwargs, **options)
        with _gc_paused():
            return self._send(tuple(args), kwargs, options)

    def _send(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> GroupResult:
        batch = self.app.batch()
        calls = [t.clone(args, kwargs, **options) for t in self.tasks] if (
            args or kwargs or options) else self.tasks
        ids = new_task_ids(len(calls))
        messages: list[NewMessage] = []

        def build() -> Iterator[NewMessage]:
            # Built while they are written: a COPY sends rows as they come, so PostgreSQL
            # stores the first ones while the rest are encoded.
            for call, task_id in zip(calls, ids):
                message = call.build_message(batch, task_id)
                messages.append(message)
                yield message

        if calls:
            publishing.publish(build(), using=self.app.conf.broker_alias, count=len(calls))
        app = self.app
        results = [AsyncResult(m.task_id, app=app, task_name=m.head.task_name) for m in messages]
        return GroupResult(str(uuid.uuid4()), results, app=app)

    def apply(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        """Run every task here, one after the other; returns their eager results."""
        args = tuple(args)
        results = [t.apply(args, kwargs, **options) for t in self.tasks]
        return GroupResult(str(uuid.uuid4()), results, app=self.app)
