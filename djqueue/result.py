"""``AsyncResult`` and ``EagerResult``: a handle on one task's state and outcome."""

from __future__ import annotations

import datetime
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import states
from .client.asynchronous import AsyncWait
from .client.current import current_app
from .client.result_graph import ResultGraph, children_key
from .exceptions import TimeoutError
from .serialization import exception_from_data, is_exception_data, loads

if TYPE_CHECKING:
    from .client.base import App
    from .backends import ResultBackend, ResultRecord


class AsyncResult(AsyncWait, ResultGraph):
    """The state and outcome of a task, read from the result backend each time it is asked.

    An id nothing is known about reports ``PENDING``, as in Celery.
    """

    def __init__(self, id: str, app: App | None = None, task_name: str | None = None,
                 parent: AsyncResult | GroupResult | None = None) -> None:
        self.id = str(id)
        self.app = app or current_app()
        self.task_name = task_name
        #: The result of the step before, in a chain (or a chord body's header), when this
        #: handle was made by sending the workflow.
        self.parent = parent
        self._final: ResultRecord | None = None
        self._children: list[AsyncResult | GroupResult] | None = None

    task_id = property(lambda self: self.id)

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        """Equal to a result of the same id, and to the id itself, as in Celery."""
        if isinstance(other, str):
            return other == self.id
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _record(self) -> ResultRecord | None:
        if self._final is not None:
            return self._final
        record = self.app.backend.get(self.id)
        if record is not None and record.state in states.READY_STATES:
            self._final = record  # finished results never change again
        return record

    @property
    def state(self) -> str:
        record = self._record()
        return record.state if record else states.PENDING

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def _value(self, record: ResultRecord | None) -> Any:
        if record is None or record.result is None:
            return None
        value = loads(record.result, record.content_type, self.app.result_accept_content())
        if record.state in states.EXCEPTION_STATES and is_exception_data(value):
            return exception_from_data(value)
        return value

    @property
    def result(self) -> Any:
        """The return value, or the exception when the task failed."""
        return self._value(self._record())

    info = result

    @property
    def traceback(self) -> str | None:
        record = self._record()
        return record.traceback if record else None

    @property
    def date_done(self) -> datetime.datetime | None:
        record = self._record()
        return record.date_done if record else None

    @property
    def children(self) -> list[AsyncResult | GroupResult] | None:
        """The results of what the task started, as Celery's: what it sent while it ran, then
        its ``link`` callbacks (several as one group) and the next step of its chain; None until
        it finished. They are recorded by the round that stored its result
        (:mod:`djqueue.client.result_graph`)."""
        if self._children is None and self.ready():
            record = self.app.backend.get(children_key(self.id))
            self._children = [] if record is None or record.result is None else [
                result_from_tuple(node, self.app) for node in json.loads(record.result)]
        return self._children

    def as_tuple(self) -> tuple[tuple[str, Any], None]:
        """Celery's serializable form (:func:`result_from_tuple` makes it a result again)."""
        return (self.id, self.parent and self.parent.as_tuple()), None

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        """Wait for the task to finish and return its value.

        Raises :class:`djqueue.exceptions.TimeoutError` after ``timeout`` seconds. When the task
        failed, its exception is raised (or returned with ``propagate=False``). The backend is
        polled quickly at first, then every ``interval`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            record = self._record()
            if record is not None and record.state in states.READY_STATES:
                value = self._value(record)
                if propagate and record.state in states.PROPAGATE_STATES and isinstance(
                    value, BaseException
                ):
                    raise value
                return value
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"The operation timed out: task {self.id} did not finish in {timeout}s")
            sleep = pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0))
            time.sleep(sleep)
            pause = min(pause * 2, interval)

    wait = get

    def revoke(self, terminate: bool = False, signal: str | int = "SIGTERM") -> None:
        """Make sure the task never runs; with ``terminate`` also stop it if it is running."""
        # On first use: revocations are rows (the models), and this module stays importable while
        # Django is still loading apps.
        from .client.revocation import revoke

        revoke(self.id, terminate=terminate, signal=signal, using=self.app.conf.broker_alias)

    def forget(self) -> None:
        """Remove the stored result (and its children's record)."""
        self._final = self._children = None
        self.app.backend.forget(self.id)
        self.app.backend.forget(children_key(self.id))


class EagerResult(AsyncResult):
    """The outcome of ``task.apply()``: computed in this process, kept in memory."""

    def __init__(
        self, id: str, value: Any, state: str, traceback: str | None = None
    ) -> None:
        self.id = id
        self.task_name = None
        self.parent: AsyncResult | GroupResult | None = None
        self._value_held = value
        self._state = state
        self._traceback = traceback
        self._date_done = datetime.datetime.now(datetime.timezone.utc)

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def result(self) -> Any:
        return self._value_held

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback

    @property
    def date_done(self) -> datetime.datetime | None:
        return self._date_done

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        if propagate and self._state in states.PROPAGATE_STATES:
            raise self._value_held
        return self._value_held

    wait = get

    @property
    def children(self) -> None:
        """Celery's: an eager run records no children."""
        return None

    def revoke(self, terminate: bool = False, signal: str | int = "SIGTERM") -> None:
        return None  # it already ran

    def forget(self) -> None:
        return None


def _state_of(record: ResultRecord | None) -> str:
    return record.state if record else states.PENDING


class ResultSet:
    """Several results asked about together (Celery's ``ResultSet``), in the order given.

    Each question reads the states of all unfinished members with one query; finished members are
    remembered, as :class:`AsyncResult` does.
    """

    def __init__(self, results: Iterable[AsyncResult] = (), app: App | None = None) -> None:
        self.results = list(results)
        self.app = app or current_app()

    def __repr__(self) -> str:
        return f"<ResultSet: [{', '.join(r.id for r in self.results)}]>"

    def add(self, result: AsyncResult) -> None:
        """Add ``result`` unless it is already there."""
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: AsyncResult | str) -> None:
        """Remove ``result`` (or the result of that task id); KeyError if it is not there."""
        if isinstance(result, str):
            result = AsyncResult(result, app=self.app)
        try:
            self.results.remove(result)
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: AsyncResult | str) -> None:
        """Remove ``result`` if it is there."""
        try:
            self.remove(result)
        except KeyError:
            pass

    def update(self, results: Iterable[AsyncResult]) -> None:
        """Add every result of ``results`` not already there."""
        for result in results:
            self.add(result)

    def clear(self) -> None:
        self.results.clear()

    def revoke(self, terminate: bool = False, signal: str | int = "SIGTERM") -> None:
        """Revoke every task."""
        for result in self.results:
            result.revoke(terminate=terminate, signal=signal)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def _states(self) -> list[str]:
        waiting = [r for r in self.results if not isinstance(r, EagerResult) and r._final is None]
        found = self.app.backend.get_many([r.id for r in waiting]) if waiting else {}
        for result in waiting:
            record = found.get(result.id)
            if record is not None and record.state in states.READY_STATES:
                result._final = record
        return [
            r.state if isinstance(r, EagerResult) or r._final else _state_of(found.get(r.id))
            for r in self.results
        ]

    def ready(self) -> bool:
        """Whether every task has finished (successfully or not)."""
        return all(state in states.READY_STATES for state in self._states())

    def waiting(self) -> bool:
        """Whether some task has not finished yet."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many tasks finished successfully."""
        return sum(state == states.SUCCESS for state in self._states())

    def successful(self) -> bool:
        """Whether every task finished successfully."""
        return all(state == states.SUCCESS for state in self._states())

    def failed(self) -> bool:
        """Whether some task failed."""
        return any(state == states.FAILURE for state in self._states())

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> list[Any]:
        """Wait for every task and return their values in order.

        With ``propagate`` the first failed task's exception (in group order) is raised; without it
        the exception takes that task's place in the list. Raises
        :class:`djqueue.exceptions.TimeoutError` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while not self.ready():
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"The operation timed out: {self!r} did not finish in {timeout}s"
                )
            sleep = pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0))
            time.sleep(sleep)
            pause = min(pause * 2, interval)
        return [result.get(propagate=propagate) for result in self.results]

    join = get

    def forget(self) -> None:
        """Remove the stored results of every task."""
        for result in self.results:
            result.forget()


#: The task name of a saved group's record (``GroupResult.save()``).
SAVED_GROUP = "djqueue.group"


class GroupResult(ResultSet):
    """The results of a :class:`~djqueue.canvas.group`, in the order its tasks were given, with
    the group's id; ``save()`` keeps the list in the result backend for ``restore(id)``."""

    def __init__(
        self, id: str | None = None, results: Iterable[AsyncResult] = (), app: App | None = None,
        parent: AsyncResult | GroupResult | None = None,
    ) -> None:
        super().__init__(results, app=app)
        self.id = str(id or uuid.uuid4())
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    @property
    def children(self) -> list[AsyncResult]:
        """Its members' results, as Celery's (what ``collect()`` follows from a group)."""
        return self.results

    def as_tuple(self) -> tuple[tuple[str, Any], list[Any]]:
        """Celery's serializable form, members included."""
        return ((self.id, self.parent and self.parent.as_tuple()),
                [result.as_tuple() for result in self.results])

    def save(self, backend: ResultBackend | None = None) -> None:
        """Store the group's task ids in the result backend under the group's id (a record of
        task name ``djqueue.group``), for :meth:`restore`."""
        # On first use: the backends need the models, and this module stays importable while
        # Django is still loading apps.
        from .backends import ResultRecord

        ids = [result.id for result in self.results]
        (backend or self.app.backend).store([ResultRecord(
            self.id, states.SUCCESS, SAVED_GROUP, "application/json", json.dumps(ids),
            date_done=datetime.datetime.now(datetime.timezone.utc))])

    @classmethod
    def restore(cls, id: str, backend: ResultBackend | None = None,
                app: App | None = None) -> GroupResult | None:
        """The group saved under ``id``, or None."""
        app = app or current_app()
        record = (backend or app.backend).get(id)
        if record is None or record.task_name != SAVED_GROUP or record.result is None:
            return None
        return cls(id, [AsyncResult(task_id, app=app) for task_id in json.loads(record.result)],
                   app=app)

    def delete(self, backend: ResultBackend | None = None) -> None:
        """Remove what :meth:`save` stored."""
        (backend or self.app.backend).forget(self.id)


def result_from_tuple(node: Any, app: App | None = None) -> AsyncResult | GroupResult:
    """The result whose ``as_tuple()`` (or its JSON form, lists for tuples) is ``node``."""
    (id, parent_node), members = node
    parent = None if parent_node is None else result_from_tuple(parent_node, app)
    if members is None:
        return AsyncResult(id, app=app, parent=parent)
    return GroupResult(id, [result_from_tuple(m, app) for m in members], app=app, parent=parent)
