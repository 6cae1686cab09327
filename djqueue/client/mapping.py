"""Celery's ``xmap``, ``xstarmap`` and ``chunks``: many calls of one task made by few tasks
(``task.map(items)``, ``task.starmap(items)``, ``task.chunks(items, n)``). They run as the
built-in tasks ``celery.map`` and ``celery.starmap`` (:mod:`djqueue.client.builtins`)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import states
from ..result import EagerResult, GroupResult
from .signature import Signature, signature

if TYPE_CHECKING:
    from .base import App


class _mapping(Signature):  # noqa: N801 - Celery's lower-case canvas names
    """One task that calls ``task`` for each item of ``it`` and returns the results in order."""

    builtin = ""

    def __init__(self, task: Signature | Mapping[str, Any], it: Iterable[Any],
                 app: App | None = None, **options: Any) -> None:
        call = signature(task, app=app)
        super().__init__(self.builtin, (), {"task": call.as_dict(), "it": list(it)}, options,
                         app=app or call.app)

    def apply(  # type: ignore[override]
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> EagerResult:
        call = Signature.from_dict(self.kwargs["task"], app=self.app)
        values = [self._call(call, item) for item in self.kwargs["it"]]
        return EagerResult(self.options.get("task_id") or str(uuid.uuid4()), values,
                           states.SUCCESS)


class xmap(_mapping):  # noqa: N801 - Celery's name
    """``task.map(items)``: one task calling ``task(item)`` for each item."""

    builtin = "celery.map"

    @staticmethod
    def _call(call: Signature, item: Any) -> Any:
        return call(item)


class xstarmap(_mapping):  # noqa: N801 - Celery's name
    """``task.starmap(items)``: one task calling ``task(*item)`` for each item."""

    builtin = "celery.starmap"

    @staticmethod
    def _call(call: Signature, item: Any) -> Any:
        return call(*item)


class chunks:  # noqa: N801 - Celery's name
    """``task.chunks(items, n)``: the argument tuples ``items`` split in chunks of ``n``, each
    chunk one task (an :class:`xstarmap`), sent as a group."""

    def __init__(self, task: Signature | Mapping[str, Any], it: Iterable[Iterable[Any]], n: int,
                 app: App | None = None) -> None:
        if n < 1:
            raise ValueError("chunks need at least one item each")
        self.task = signature(task, app=app)
        self.it = [tuple(item) for item in it]
        self.n = n

    def group(self) -> Signature:
        parts = iter(self.it)
        pieces = iter(lambda: list(itertools.islice(parts, self.n)), [])
        return Signature.TYPES["group"](  # type: ignore[return-value]
            [xstarmap(self.task, piece, app=self.task.app) for piece in pieces],
            app=self.task.app)

    def apply_async(self, **options: Any) -> GroupResult:
        return self.group().apply_async(**options)

    def __call__(self, **options: Any) -> GroupResult:
        return self.apply_async(**options)

    def delay(self) -> GroupResult:
        return self.apply_async()

    def apply(self, **options: Any) -> GroupResult:
        return self.group().apply(**options)

