"""A task's children and the walk over them: ``AsyncResult.children``, ``collect()``,
``iterdeps()`` (Celery's result graph).

Celery stores with a task's result the results of the tasks it started (``children``). In
djqueue what follows a finished task of a workflow (the next step of its chain, its ``link``
callbacks) is written by the worker's round that stores its result
(:mod:`djqueue.worker.workflow`); that round also writes the children's results as one more
record of the result backend, in the same transaction on the database backend: its key is
:func:`children_key` of the task's id, its task name ``djqueue.children``, its value the
children in Celery's tuple form (``AsyncResult.as_tuple()``) as JSON. So every backend keeps
them, they expire with the results, and a task without children costs nothing.

What a task sends while it runs (``add.delay()``, a group, a chain) is among its children too,
first, as in Celery (``Task.trail``, on by default; ``apply_async(add_to_parent=False)`` leaves
one call out): the worker gives the run a :data:`TRAIL` list that the sending calls append to.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .. import states
from ..exceptions import IncompleteStream

if TYPE_CHECKING:
    from ..backends.base import ResultRecord

#: The task name of a children record.
CHILDREN_TASK = "djqueue.children"
_NAMESPACE = uuid.UUID("6f1c1d0e-6a52-4c1e-9a43-2f0f3c0f6b1d")
#: The results of what the task running in this context sent, while a worker runs a task whose
#: ``trail`` is on; None anywhere else.
TRAIL: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("djqueue_trail",
                                                                        default=None)
Sent = TypeVar("Sent")


class Node(Protocol):
    """What the walk asks of a result: an ``AsyncResult`` or a ``GroupResult``."""

    @property
    def children(self) -> Sequence[Node] | None: ...

    def ready(self) -> bool: ...

    def get(self, **kwargs: Any) -> Any: ...

    def as_tuple(self) -> Any: ...


def add_to_trail(result: Sent, add_to_parent: bool = True) -> Sent:
    """``result``, counted among the children of the task running here if there is one
    (``add_to_parent``: Celery's call option)."""
    if add_to_parent:
        trail = TRAIL.get()
        if trail is not None:
            trail.append(result)
    return result


def children_key(task_id: str) -> str:
    """The key of ``task_id``'s children record: a name-based UUID, so it fits wherever a task
    id fits, whatever the length of ``task_id``."""
    return f"children-{uuid.uuid5(_NAMESPACE, task_id)}"


def children_record(task_id: str, children: Sequence[Any]) -> ResultRecord:
    """The record keeping ``children`` (results' ``as_tuple()``) as the children of
    ``task_id``."""
    # On first use: the backends need the models, and the client side stays importable while
    # Django is still loading apps.
    from ..backends.base import ResultRecord

    return ResultRecord(children_key(task_id), states.SUCCESS, CHILDREN_TASK,
                        "application/json", json.dumps(children),
                        date_done=datetime.datetime.now(datetime.timezone.utc))


class ResultGraph:
    """``iterdeps`` and ``collect`` of :class:`~djqueue.result.AsyncResult`."""

    def iterdeps(self: Node, intermediate: bool = False) -> Iterator[tuple[Node | None, Node]]:
        """``(parent, result)`` pairs over this result and its children, breadth first. A
        result not ready yet raises :class:`IncompleteStream` once it was yielded, unless
        ``intermediate``: then its children are not followed."""
        queue: deque[tuple[Node | None, Node]] = deque([(None, self)])
        while queue:
            parent, node = queue.popleft()
            yield parent, node
            if node.ready():
                queue.extend((node, child) for child in node.children or ())
            elif not intermediate:
                raise IncompleteStream(f"{node!r} is not ready: its children are not known yet")

    def collect(self: Node, intermediate: bool = False,
                **kwargs: Any) -> Iterator[tuple[Node, Any]]:
        """``(result, value)`` for this result and every result it led to (its children, theirs,
        …), each value waited for with ``get(**kwargs)`` as it comes."""
        for _, node in ResultGraph.iterdeps(self, intermediate):
            yield node, node.get(**kwargs)
