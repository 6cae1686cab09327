"""Celery's canvas: signatures, ``group``, ``chain``, ``chord``, ``chunks``, ``xmap``/``xstarmap``.

A :class:`Signature` (:mod:`djqueue.client.signature`) is a task call written down to be made
later. ``group`` sends many at once: on the database broker one ``INSERT`` for the whole group,
inside the caller's transaction like any other enqueue. ``chain`` (``a | b | c``) runs them one
after the other, each result the first argument of the next step; ``chord(header)(body)`` (or
``group | sig``) runs the body once every header member finished, with their results in order.

A workflow is written in the database as it goes (:mod:`djqueue.client.launch`): the next step of
a chain, a callback and a chord's body are written in the same transaction as the result of the
task they follow (:mod:`djqueue.worker.workflow`), and a chord's pending count is a row. A worker
killed at any moment never loses nor repeats a step, and a chord's body runs exactly once.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .client import launch, publishing
from .broker.rows import NewMessage
from .client.call_checks import check_canvas_call
from .client.current import current_app
from .client.publishing import new_task_ids
from .client.result_graph import add_to_trail
from .client.mapping import chunks, xmap, xstarmap
from .client.signature import Signature, maybe_signature, signature, subtask
from .exceptions import ChordError
from .result import AsyncResult, EagerResult, GroupResult
from . import states

if TYPE_CHECKING:
    from .client.base import App

__all__ = ["Signature", "chain", "chord", "chunks", "group", "maybe_signature", "signature",
           "subtask", "xmap", "xstarmap"]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a group (or a chord's header) is built and sent.

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


def _tasks_of(tasks: tuple[Any, ...], app: App | None) -> list[Signature]:
    if len(tasks) == 1 and not isinstance(tasks[0], (Signature, Mapping)):
        tasks = tuple(tasks[0])  # f(generator) as well as f(sig, sig, ...)
    # Signatures are kept as given, as Celery does: copying each costs more than sending.
    return [t if isinstance(t, Signature) else Signature.from_dict(t, app=app) for t in tasks]


def _eager(app: App) -> bool:
    return bool(app.conf.CELERY_ALWAYS_EAGER)


class _TaskList(Signature):
    """A canvas made of a list of signatures (``group``, ``chain``): Celery's dict form keeps
    them in ``kwargs["tasks"]``, and its app is the first task's unless given."""

    def __init__(self, name: str, tasks: list[Signature], app: App | None,
                 options: Mapping[str, Any]) -> None:
        self.tasks = tasks
        app = app or (tasks[0].app if tasks else current_app())
        super().__init__(name, (), None, options, app=app)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: App | None = None) -> Signature:
        return cls(data["kwargs"]["tasks"], app=app, **(data.get("options") or {}))

    def as_dict(self) -> dict[str, Any]:
        data = super().as_dict()
        data["kwargs"] = {"tasks": [t.as_dict() for t in self.tasks]}
        return data


@Signature.register_type
class group(_TaskList):  # noqa: N801 - Celery's name
    """Signatures sent together: ``group(add.s(i, i) for i in range(100)).apply_async()``.

    The whole group is inserted with one statement, so it commits (or rolls back) as one, and the
    returned :class:`GroupResult` answers for all of its tasks with one query at a time.
    ``group | sig`` is a chord.
    """

    subtask_type = "group"

    def __init__(self, *tasks: Signature | Iterable[Signature], app: App | None = None,
                 **options: Any) -> None:
        with _gc_paused():
            listed = _tasks_of(tasks, app)
        super().__init__("celery.group", listed, app, options)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Signature]:
        return iter(self.tasks)

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, Signature) and not isinstance(other, group):
            return chord(self, other, app=self.app)
        return super().__or__(other)

    def link(self, callback: Any) -> Any:
        """As Celery: the callback follows the group's first task (with no argument)."""
        return self.tasks[0].link(signature(callback).set(immutable=True))

    def link_error(self, errback: Any) -> Any:
        """The errback follows every task of the group."""
        for task in self.tasks:
            task.link_error(errback)
        return errback

    def freeze(self, _id: str | None = None) -> GroupResult:  # type: ignore[override]
        if _id is not None or "task_id" not in self.options:
            self.options["task_id"] = _id or str(uuid.uuid4())
        return GroupResult(self.options["task_id"], [t.freeze() for t in self.tasks],
                           app=self.app)

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:  # type: ignore[override]
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:  # type: ignore[override]
        return self.apply_async(args, kwargs)

    def apply_async(  # type: ignore[override]
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        """Send every task of the group (``args`` put first, ``kwargs`` and ``options`` merged)."""
        if _eager(self.app):
            return self.apply(args, kwargs, **options)
        add_to_parent = options.pop("add_to_parent", True)
        with _gc_paused():
            if any(t.subtask_type or (t.options and not launch.WORKFLOW_OPTIONS.isdisjoint(
                    t.options)) for t in self.tasks):
                result = launch.apply_async(self.clone(**options), tuple(args), kwargs,
                                            checked=True)
            else:
                result = self._send(tuple(args), kwargs, options)
        return add_to_trail(result, add_to_parent)  # type: ignore[return-value]

    def _send(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> GroupResult:
        batch = self.app.batch()
        calls = [t.clone(args, kwargs, **options) for t in self.tasks] if (
            args or kwargs or options) else self.tasks
        for call in calls:
            check_canvas_call(self.app, call.task, call.args, call.kwargs)
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
        return GroupResult(self.options.get("task_id") or str(uuid.uuid4()), results, app=app)

    def apply(  # type: ignore[override]
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        """Run every task here, one after the other; returns their eager results."""
        args = tuple(args)
        results = [t.apply(args, kwargs, **options) for t in self.tasks]
        return GroupResult(self.options.get("task_id") or str(uuid.uuid4()), results,
                           app=self.app)


@Signature.register_type
class chain(_TaskList):  # noqa: N801 - Celery's name
    """Steps run one after the other, each one's result put first in the next one's arguments
    (unless it is immutable): ``chain(add.s(2, 2), mul.s(4))`` or ``add.s(2, 2) | mul.s(4)``.
    A group followed by another step is a chord. Its result is the last step's, whose
    ``parent`` is the step before."""

    subtask_type = "chain"

    def __init__(self, *tasks: Signature | Iterable[Signature], app: App | None = None,
                 **options: Any) -> None:
        super().__init__("celery.chain", _tasks_of(tasks, app), app, options)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"

    def __or__(self, other: Any) -> Signature:
        if not isinstance(other, Signature):
            return NotImplemented
        more = other.tasks if isinstance(other, chain) else [other]
        return chain(*self.tasks, *more, app=self.app)

    def steps(self) -> list[Signature]:
        """The steps as they run: nested chains flattened, a group followed by a step made a
        chord with that step as its body."""
        flat: list[Signature] = []
        for task in self.tasks:
            flat.extend(task.steps() if isinstance(task, chain) else [task])
        steps: list[Signature] = []
        for task in flat:
            if steps and isinstance(steps[-1], group):
                steps[-1] = chord(steps[-1], task, app=self.app)
            else:
                steps.append(task)
        return steps

    def link(self, callback: Any) -> Any:
        """The callback follows the chain's last step."""
        return self.tasks[-1].link(callback)

    def link_error(self, errback: Any) -> Any:
        """The errback follows every step (as Celery's)."""
        for task in self.tasks:
            task.link_error(errback)
        return errback

    def freeze(self, _id: str | None = None) -> AsyncResult:
        return launch.frozen(self)

    def apply_async(  # type: ignore[override]
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """Send the first step; each later one is written by the round that stores the result
        of the step before."""
        add_to_parent = options.pop("add_to_parent", True)
        call = _with_options(self, options)
        if _eager(self.app):
            return call.apply(args, kwargs)
        result = launch.apply_async(call, tuple(args), kwargs, checked=True)
        first = result
        while isinstance(first.parent, AsyncResult):
            first = first.parent
        add_to_trail(first, add_to_parent)  # the first step's, as Celery's: collect() walks on
        return result  # type: ignore[return-value]

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult:  # type: ignore[override]
        return self.apply_async(args, kwargs)

    def apply(  # type: ignore[override]
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """Run every step here; a failed step ends the chain (its result is returned)."""
        result: AsyncResult | None = None
        for step in _with_options(self, options).steps():
            if result is None:
                following = step.apply(args, kwargs)
            else:
                following = step.apply((result.get(),))
            following.parent = result
            result = following
            if result.failed():
                break
        if result is None:
            raise ValueError("an empty chain has nothing to run")
        return result


@Signature.register_type
class chord(Signature):  # noqa: N801 - Celery's name
    """A header group whose body runs once all of its tasks have finished, with their results
    in header order as its first argument: ``chord(header)(body)``, ``chord(header, body)()``,
    ``group(...) | body``. If a header task fails the body does not run: its result is FAILURE
    with :class:`~djqueue.exceptions.ChordError` and its ``link_error`` callbacks are called."""

    subtask_type = "chord"

    def __init__(self, header: Iterable[Any], body: Signature | Mapping[str, Any] | None = None,
                 task_id: str | None = None, app: App | None = None, **options: Any) -> None:
        self.tasks = header if isinstance(header, group) else group(header, app=app)
        self.body = maybe_signature(body, app=app)
        app = app or self.tasks.app
        if task_id is not None:
            options["task_id"] = task_id
        super().__init__("celery.chord", (), None, options, app=app)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: App | None = None) -> chord:
        kwargs = data["kwargs"]
        return cls(group(kwargs["header"], app=app), kwargs.get("body"), app=app,
                   **(data.get("options") or {}))

    def as_dict(self) -> dict[str, Any]:
        data = super().as_dict()
        data["kwargs"] = {"header": [t.as_dict() for t in self.tasks.tasks],
                          "body": self.body.as_dict() if self.body else None}
        return data

    def __repr__(self) -> str:
        return f"chord({self.tasks!r}, {self.body!r})"

    def header_tasks(self) -> list[Signature]:
        """The header's tasks, nested groups flattened into it (as Celery does)."""
        flat: list[Signature] = []
        pending = list(self.tasks.tasks)
        while pending:
            task = pending.pop(0)
            if isinstance(task, group):
                pending[:0] = task.tasks
            else:
                flat.append(task)
        return flat

    def link(self, callback: Any) -> Any:
        return self._body().link(callback)

    def link_error(self, errback: Any) -> Any:
        return self._body().link_error(errback)

    def _body(self) -> Signature:
        if self.body is None:
            raise ValueError("this chord has no body yet: chord(header)(body)")
        return self.body

    def freeze(self, _id: str | None = None) -> AsyncResult:
        return launch.frozen(self)

    def __call__(self, body: Signature | None = None, **options: Any) -> AsyncResult:  # type: ignore[override]
        """``chord(header)(body)``: send the chord with this body."""
        call = self.clone()
        if body is not None:
            call.body = body  # type: ignore[attr-defined]
        return call.apply_async((), None, **options)

    def apply_async(  # type: ignore[override]
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """Write the header's messages and the chord's row in one transaction; the body is
        written by the round that finishes the last header task."""
        add_to_parent = options.pop("add_to_parent", True)
        call = _with_options(self, options)
        call._body()  # type: ignore[attr-defined]
        if _eager(self.app):
            return call.apply(args, kwargs)
        self.app.backend.ensure_chords_allowed()
        with _gc_paused():  # its header, as a group's tasks
            result = launch.apply_async(call, tuple(args), kwargs, checked=True)
        return add_to_trail(result, add_to_parent)  # type: ignore[return-value]

    def apply(  # type: ignore[override]
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
        propagate: bool = True, **options: Any,
    ) -> AsyncResult:
        """Run the header here, then the body with its results (a failed header task raises
        with ``propagate``, as Celery's; without it the body fails with ChordError)."""
        body = _with_options(self, options)._body()  # type: ignore[attr-defined]
        header = group(self.header_tasks(), app=self.app).apply(args, kwargs)
        failed = next((r for r in header.results if r.failed()), None)
        if failed is not None and not propagate:
            error = ChordError(f"Dependency {failed.id} raised {failed.result!r}")
            result: AsyncResult = EagerResult(body.freeze().id, error, states.FAILURE)
        else:
            result = body.apply((header.get(propagate=propagate),))
        result.parent = header
        return result


def _with_options(sig: Signature, options: Mapping[str, Any]) -> Any:
    """A copy of a chain or chord with call options applied: ``link`` and ``link_error`` as
    their methods do, the others given to every task."""
    options = dict(options)
    links = [(options.pop("link", None), "link"), (options.pop("link_error", None), "link_error")]
    call = copy.copy(sig)
    if isinstance(call, chord):
        if options:  # links go to the body alone: without options the header is left as it is
            call.tasks = group([t.clone(**options) for t in call.tasks.tasks], app=call.app)
        call.body = call.body.clone(**options) if call.body else None
    else:
        call.tasks = [t.clone(**options) for t in call.tasks]  # type: ignore[attr-defined]
    for linked, method in links:
        for one in ([linked] if isinstance(linked, (Signature, Mapping)) else linked or []):
            getattr(call, method)(signature(one, app=call.app))
    return call
