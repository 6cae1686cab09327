"""Unique tasks: at most one message per key, enforced by a unique index.

A call is unique when it gives ``unique_key=…``, or its task has the ``unique`` option (then the
key is derived from the task's arguments). How long the key holds (the call's ``unique=…``, else
the task's, else ``"waiting"``):

- ``"waiting"``: while its message waits (ready, or reserved by a worker that has not started it);
- ``"running"``: while it waits or runs;
- a number of seconds: for that long after it was sent, whatever became of it.

Publishing a unique call inserts its :class:`~djqueue.flow.models.UniqueTask` row and its message
in one transaction (the caller's, when there is one). A second producer's insert of the same key
meets the unique index (on PostgreSQL it waits for the first transaction, then fails): it then
reads the row, and if its holder still holds the key it gets the holder's ``AsyncResult``
(``on_duplicate="result"``, the default) or :class:`~djqueue.exceptions.DuplicateTask`
(``on_duplicate="raise"``). A row whose holder no longer holds the key is taken over with a
conditional update, so of two producers taking over the same stale row, one does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Now

from . import identifiers, publishing
from .control import db_now_plus
from ..broker.rows import NewMessage
from ..exceptions import DuplicateTask
from ..models import Message, UniqueTask

if TYPE_CHECKING:
    from .task import Task

MODES = ("waiting", "running")
ON_DUPLICATE = ("result", "raise")
#: The message states in which a key of each mode is held.
_HOLDING = {"waiting": ["ready", "reserved"], "running": ["ready", "reserved", "started"]}
#: Attempts at taking a key whose holder keeps changing under us.
ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Uniqueness:
    """How one call is unique."""

    key: str | None  # None: derived from the arguments
    mode: str  # "waiting", "running" or "period"
    seconds: float | None
    on_duplicate: str


def from_options(options: dict[str, Any], task: Task | None) -> Uniqueness | None:
    """Take the unique call options out of ``options``; None when the call is not unique."""
    key = options.pop("unique_key", None)
    mode = options.pop("unique", None)
    on_duplicate = options.pop("on_duplicate", None)
    if task is not None:
        mode = task.unique if mode is None else mode
        on_duplicate = on_duplicate or task.on_duplicate
    if key is None and mode is None:
        return None
    mode = "waiting" if mode is None else mode
    on_duplicate = on_duplicate or "result"
    if on_duplicate not in ON_DUPLICATE:
        raise ValueError(f"on_duplicate must be one of {', '.join(ON_DUPLICATE)}, not "
                         f"{on_duplicate!r}")
    if key is not None:
        key = identifiers.check("unique key", str(key), identifiers.MAX_TASK_ID)
    if mode in MODES:
        return Uniqueness(key, mode, None, on_duplicate)
    if isinstance(mode, (int, float)) and not isinstance(mode, bool) and 0 < mode < 10**9:
        return Uniqueness(key, "period", float(mode), on_duplicate)
    raise ValueError(f"unique must be 'waiting', 'running' or a positive number of seconds, "
                     f"not {mode!r}")


def derived_key(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """A key for the arguments: equal arguments give equal keys."""
    text = json.dumps([list(args), dict(kwargs)], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def publish(message: NewMessage, how: Uniqueness, args: Sequence[Any],
            kwargs: Mapping[str, Any], using: str) -> str:
    """Publish ``message`` unless its key is held; the task id of the message that holds it."""
    key = how.key if how.key is not None else derived_key(args, kwargs)
    name, mine = message.head.task_name, message.task_id
    until = db_now_plus(how.seconds) if how.seconds is not None else None
    rows = UniqueTask.objects.using(using)
    holding = {"task_id": mine, "mode": how.mode, "until": until}
    with transaction.atomic(using=using):
        for _ in range(ATTEMPTS):
            try:
                with transaction.atomic(using=using):  # a savepoint: the key may be taken
                    rows.create(task_name=name, key=key, **holding)
            except IntegrityError:
                holder = rows.filter(task_name=name, key=key).values_list("task_id", flat=True)
                holder_id = holder.first()
                if holder_id is None:
                    continue  # its row was deleted meanwhile: try again
                if _holds(using, name, key):
                    if how.on_duplicate == "raise":
                        raise DuplicateTask(name, key, holder_id) from None
                    return holder_id
                if not rows.filter(task_name=name, key=key, task_id=holder_id).update(**holding):
                    continue  # another producer took it over first
            publishing.publish([message], using=using)
            return mine
    raise DuplicateTask(name, key, None)


def _held(using: str) -> Q:
    """The rows that still hold their key (their message waits or runs, or their period has not
    passed, by their mode; on the database's clock)."""
    def message_in(states: list[str]) -> Exists:
        return Exists(Message.objects.using(using).filter(task_id=OuterRef("task_id"),
                                                          state__in=states))

    return (Q(mode="period", until__gt=Now())
            | Q(message_in(_HOLDING["waiting"]), mode="waiting")
            | Q(message_in(_HOLDING["running"]), mode="running"))


def _holds(using: str, task_name: str, key: str) -> bool:
    return UniqueTask.objects.using(using).filter(_held(using), task_name=task_name,
                                                  key=key).exists()


def delete_released(using: str) -> int:
    """Delete the rows that no longer hold their key (workers call this now and then); a
    producer taking one over meanwhile finds it gone and inserts its own."""
    return UniqueTask.objects.using(using).exclude(_held(using)).delete()[0]
