"""``Signature``: one task call written down to be made later, and the base of every canvas type.

A signature is Celery's: a task name, arguments, call options and whether it is immutable. It
has Celery's dict form (``{"task", "args", "kwargs", "options", "subtask_type", "immutable"}``),
which is how a workflow travels inside messages (a chain's remaining steps, callbacks, a chord's
body); :meth:`Signature.from_dict` rebuilds any canvas type from it through :attr:`TYPES`, where
``group``, ``chain`` and ``chord`` register themselves (:mod:`djqueue.canvas`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..broker.rows import NewMessage
from ..result import AsyncResult
from ..serialization import dumps
from .current import current_app

if TYPE_CHECKING:
    from .base import App, Batch
    from .task import Task

#: Call options that :meth:`App.build_message` takes by name; any other option travels in the
#: message's ``options``.
_MESSAGE_OPTIONS = ("countdown", "eta", "expires", "queue", "priority", "task_id", "serializer")
#: Options that hold signatures (copied, not shared, when a signature is cloned).
_LINK_OPTIONS = ("link", "link_error")


class Signature:
    """One task call, ready to be sent: ``add.s(2, 2)``, ``signature("tasks.add", (2, 2))``.

    Arguments given when it is sent are put before the stored ones, as in Celery
    (``add.s(2).delay(3)`` calls ``add(3, 2)``; a chain passes each result as the first argument
    of the next step), unless the signature is immutable (``add.si(2, 2)``). Keyword arguments
    and options given then are merged over the stored ones.
    """

    #: Canvas types by ``subtask_type`` (``group``, ``chain``, ``chord``), for :meth:`from_dict`.
    TYPES: ClassVar[dict[str, type[Signature]]] = {}
    subtask_type: ClassVar[str | None] = None

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

    @classmethod
    def register_type(cls, subclass: type[Signature]) -> type[Signature]:
        """Class decorator: make ``subclass`` what :meth:`from_dict` builds for its type."""
        cls.TYPES[subclass.subtask_type or ""] = subclass
        return subclass

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: App | None = None) -> Signature:
        """The canvas object of Celery's dict form (any ``subtask_type``)."""
        kind = data.get("subtask_type")
        if kind:
            if kind not in cls.TYPES:
                raise ValueError(f"unknown subtask_type {kind!r} in {dict(data)!r}")
            return cls.TYPES[kind].from_dict(data, app=app)
        return Signature(data["task"], data.get("args") or (), data.get("kwargs"),
                         data.get("options"), immutable=bool(data.get("immutable", False)),
                         app=app)

    def as_dict(self) -> dict[str, Any]:
        """Celery's dict form, with the signatures in ``link``/``link_error`` as dicts too."""
        options = dict(self.options)
        for key in _LINK_OPTIONS:
            if key in options:
                options[key] = [as_dict(s) for s in listed(options[key])]
        return {"task": self.task, "args": list(self.args), "kwargs": self.kwargs,
                "options": options, "subtask_type": self.subtask_type,
                "immutable": self.immutable}

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and other.as_dict() == self.as_dict()

    __hash__ = None  # type: ignore[assignment] - mutable, like Celery's (a dict)

    @property
    def type(self) -> Task:
        """The registered task this signature calls."""
        return self.app.tasks[self.task]

    @property
    def id(self) -> str | None:
        """The task id this call will have, once frozen (:meth:`freeze`) or given."""
        return self.options.get("task_id")

    def clone(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A copy with ``args`` put first and ``kwargs`` merged (both ignored when immutable) and
        ``options`` merged."""
        if self.immutable:
            args, kwargs = (), None
        # Not copy.copy(): a chord of 10,000 clones as many, and copy's protocol cost a third of
        # planning it.
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__)
        copied.args = (*args, *self.args) if args else self.args
        copied.kwargs = {**self.kwargs, **kwargs} if kwargs else dict(self.kwargs)
        copied.options = {**self.options, **options}
        for key in _LINK_OPTIONS:
            if key in copied.options:
                copied.options[key] = listed(copied.options[key])
        return copied

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Change stored options in place (``add.s(2, 2).set(countdown=10)``); returns itself."""
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def freeze(self, _id: str | None = None) -> AsyncResult:
        """Give the call its task id now (``_id``, or a new one unless it has one); its result."""
        if _id is not None or "task_id" not in self.options:
            self.options["task_id"] = _id or new_id()
        return AsyncResult(self.options["task_id"], app=self.app, task_name=self.task)

    def link(self, callback: Signature | Mapping[str, Any]) -> Signature | Mapping[str, Any]:
        """Call ``callback`` with this task's result when it succeeds; returns ``callback``."""
        self.options["link"] = [*listed(self.options.get("link")), callback]
        return callback

    def link_error(self, errback: Signature | Mapping[str, Any]) -> Signature | Mapping[str, Any]:
        """Call ``errback`` when this task fails: ``errback(request, exc, traceback)`` if its
        function takes more than one argument, else ``errback(task_id)``; returns ``errback``."""
        self.options["link_error"] = [*listed(self.options.get("link_error")), errback]
        return errback

    def on_error(self, errback: Signature | Mapping[str, Any]) -> Signature:
        """:meth:`link_error` returning this signature, to chain calls as Celery's:
        ``add.s(2, 2).on_error(handler.s()).delay()`` sends ``add``."""
        self.link_error(errback)
        return self

    def __or__(self, other: Any) -> Signature:
        """``a | b``: a chain; ``group | sig``: a chord (see :mod:`djqueue.canvas`)."""
        if not isinstance(other, Signature):
            return NotImplemented
        more = other.tasks if other.subtask_type == "chain" else [other]  # type: ignore[attr-defined]
        return self.TYPES["chain"](self, *more, app=self.app)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the call, with ``args`` put before the stored ones and ``kwargs`` merged."""
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

    def build_message(
        self, batch: Batch, task_id: str, fields: Mapping[str, Any] | None = None
    ) -> NewMessage:
        """The message this call becomes, not yet written; ``task_id`` unless the call names one.
        ``fields`` are workflow fields for its body (see :mod:`djqueue.client.launch`).

        A call without options whose task the batch has already routed reuses that message head
        and only encodes its arguments: the common ``group(task.s(i) for i in …)``.
        """
        known = batch.heads.get(self.task) if batch.heads is not None and not self.options else None
        if known is not None:
            head, serializer = known
            payload = {"args": list(self.args), "kwargs": self.kwargs}
            if fields:
                payload.update(fields)
            return NewMessage(task_id, dumps(payload, serializer)[1], head)
        named = {key: self.options[key] for key in _MESSAGE_OPTIONS if key in self.options}
        extra = {k: v for k, v in self.options.items() if k not in _MESSAGE_OPTIONS}
        named.setdefault("task_id", task_id)
        return self.app.build_message(
            self.task, self.args, self.kwargs, task=self.app.tasks.get(self.task),
            options=extra, batch=batch, fields=fields, **named,
        )


def new_id() -> str:
    """A new task (or group) id."""
    return str(uuid.uuid4())


def listed(value: Any) -> list[Any]:
    """A ``link``/``link_error`` option as a list: one signature (or dict), or several."""
    if value is None:
        return []
    return [value] if isinstance(value, (Signature, Mapping)) else list(value)


def as_dict(value: Signature | Mapping[str, Any]) -> dict[str, Any]:
    """A signature in Celery's dict form (a dict is taken as already in it)."""
    return value.as_dict() if isinstance(value, Signature) else dict(value)


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
    (``{"task": ..., "args": ..., "kwargs": ..., "options": ..., "immutable": ...,
    "subtask_type": ...}``, which may be a group, chain or chord)."""
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, Mapping):
        return Signature.from_dict(varies, app=app)
    return Signature(varies, args, kwargs, options, immutable=immutable, app=app)


def maybe_signature(
    value: Signature | Mapping[str, Any] | None, app: App | None = None
) -> Signature | None:
    """``value`` as a canvas object: a signature as it is, a dict rebuilt, None kept."""
    if value is None or isinstance(value, Signature):
        return value
    return Signature.from_dict(value, app=app)


#: Celery 3's name for :func:`signature`.
subtask = signature
