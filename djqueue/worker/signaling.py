"""The task signals the worker's main process sends, as Celery's consumer does: ``task_received``
for a message it will run, ``task_revoked`` for one it discards or terminates, ``task_rejected``
for one it cannot read, ``task_unknown`` for one of an unregistered task.

Each function returns at once when its signal has no receiver; only then is a
:class:`Request` built (its arguments decoded on first use).
"""

from __future__ import annotations

import functools
import signal as signal_module
from typing import TYPE_CHECKING, Any

from .. import signals
from ..exceptions import DecodeError, NotRegistered
from ..serialization import loads

if TYPE_CHECKING:
    from ..broker.rows import Claimed
    from .execution import Job
    from .loop import Worker


class Request:
    """What the worker knows of a claimed message, in the shape of Celery's worker ``Request``
    (``id``, ``name``, ``task``, ``args``, ``kwargs``, ``hostname``, ``eta``, ``expires``,
    ``retries``, ``delivery_info``, ``headers``); not ``task.request``, which exists only where
    the task runs."""

    def __init__(self, worker: Worker, message: Claimed | Job) -> None:
        self.message = message
        self.id = message.task_id
        self.task_name = message.task_name
        self.name = message.shown_name or message.task_name  # Celery's: the shadow name
        self.task = worker.app.tasks.get(message.task_name)
        self.hostname = worker.hostname
        self.retries = message.retries
        self.delivery_info = {"routing_key": message.queue, "priority": message.priority}
        self._accept = worker.app.conf.CELERY_ACCEPT_CONTENT or []

    def __repr__(self) -> str:
        return f"<Request: {self.name}[{self.id}]>"

    @functools.cached_property
    def _payload(self) -> dict[str, Any]:
        try:
            payload = loads(self.message.body, self.message.content_type, self._accept)
        except DecodeError:
            return {}
        return payload if isinstance(payload, dict) else {}

    @property
    def args(self) -> list[Any]:
        return list(self._payload.get("args", []))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self._payload.get("kwargs", {}))

    @property
    def eta(self) -> str | None:
        return self._payload.get("eta")

    @property
    def expires(self) -> str | None:
        return self._payload.get("expires")

    @property
    def headers(self) -> dict[str, Any] | None:
        return self._payload.get("headers")


def received(worker: Worker, message: Claimed) -> None:
    if signals.task_received.receivers:
        signals.task_received.send(sender=worker, request=Request(worker, message))


def refused(worker: Worker, message: Claimed) -> None:
    """The signal of a claimed message that is settled without running (see
    :func:`djqueue.worker.execution.refused`)."""
    if message.unreadable:
        if signals.task_rejected.receivers:
            signals.task_rejected.send(sender=worker, message=message,
                                       exc=DecodeError(message.unreadable))
    elif message.revoked or message.expired:
        revoked(worker, message, expired=message.expired and not message.revoked)
    elif signals.task_unknown.receivers:
        signals.task_unknown.send(sender=worker, name=message.task_name, id=message.task_id,
                                  message=message, exc=NotRegistered(message.task_name))


def revoked(worker: Worker, message: Claimed | Job, *, terminated: bool = False,
            signame: str | None = None, expired: bool = False) -> None:
    """``task_revoked`` for a message discarded (revoked, expired) or terminated
    (``revoke(terminate=True)``, ``signame`` the signal sent to its process)."""
    if not signals.task_revoked.receivers:
        return
    request = Request(worker, message)
    signum = getattr(signal_module, signame, None) if signame else None
    signals.task_revoked.send(sender=request.task, request=request, terminated=terminated,
                              signum=signum, expired=expired)
