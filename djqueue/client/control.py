"""Remote control, sender side: ``app.control`` and ``app.control.inspect()``.

A command is a :class:`~djqueue.models.ControlCommand` row; every worker polls for new rows twice a
second, runs the handler of that name (see :mod:`djqueue.worker.control`) when the row is
meant for it, and writes a :class:`~djqueue.models.ControlReply` row when the sender asked for
replies. The sender waits up to ``timeout`` seconds, and stops early once every expected node (the
destination, or else every live worker) has replied.

Replies look like Celery's: ``broadcast(..., reply=True)`` returns ``[{node: reply}, ...]``;
control commands reply ``{"ok": message}`` or ``{"error": message}``; inspect methods return
``{node: data}``, or ``None`` when no worker replied.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now

from ..broker import operations
from ..flow import store as flow_store
from . import identifiers, revocation
from ..exceptions import DjqueueError, InvalidRateLimit
from ..models import ControlCommand, ControlReply, RateLimitOverride
from ..broker.monitor import live_workers
from .rates import parse_rate

if TYPE_CHECKING:
    from .base import App

logger = logging.getLogger("djqueue.control")

#: How long a command without replies stays for workers to pick up.
COMMAND_TTL = 10.0
#: How often the sender looks for replies.
REPLY_POLL_INTERVAL = 0.05
#: The longest rate limit a ``djqueue_rate_limit_override`` row holds.
RATE_LIMIT_LENGTH: int = RateLimitOverride._meta.get_field("rate_limit").max_length  # type: ignore[assignment]

#: The commands workers answer (their handlers are in djqueue/worker/control.py, which a test
#: holds to this list: the sender never imports the worker side).
COMMANDS = frozenset({
    "ping", "rate_limit", "time_limit", "revoke", "add_consumer", "cancel_consumer", "pool_grow",
    "pool_shrink", "shutdown", "active", "reserved", "scheduled", "registered", "revoked",
    "stats", "active_queues", "conf", "query_task", "clock", "report", "reset_rate_limit",
    "pause_queue", "resume_queue",
})


def normalize_rate(rate: str | float | int | None) -> str:
    """The stored form of a valid rate: ``"0"`` for no limit, otherwise the string as given.

    Raises :class:`~djqueue.exceptions.InvalidRateLimit` for a rate :func:`parse_rate` refuses
    or one longer than the column that stores it.
    """
    stored = "0" if parse_rate(rate) == 0 else str(rate).replace(" ", "")
    if len(stored) > RATE_LIMIT_LENGTH:
        raise InvalidRateLimit(f"Invalid rate limit {stored[:20]!r}…: longer than "
                               f"{RATE_LIMIT_LENGTH} characters")
    return stored


def store_rate_limit(task_name: str, rate: str | float | int | None, using: str) -> str:
    """Persist a runtime rate limit for ``task_name`` (validated); returns the stored form."""
    stored = normalize_rate(rate)
    RateLimitOverride.objects.using(using).update_or_create(
        task_name=task_name, defaults={"rate_limit": stored}
    )
    return stored


def stored_rate_limit(task_name: str, using: str) -> str | None:
    """The override stored for ``task_name`` (``"0"``: no limit), or None."""
    row = RateLimitOverride.objects.using(using).filter(task_name=task_name).first()
    return None if row is None else (row.rate_limit or "0")


def live_nodes(using: str, lost_after: float) -> list[str]:
    """Node names of the workers whose heartbeat is recent and that have not stopped."""
    return sorted({node.hostname for node in live_workers(using, lost_after)})


def db_now_plus(seconds: float) -> ExpressionWrapper:
    """The database's clock plus ``seconds``, so senders and workers on other hosts agree."""
    return ExpressionWrapper(Now() + datetime.timedelta(seconds=seconds), output_field=DateTimeField())


def merge_replies(replies: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    """``[{node: reply}, ...]`` (``broadcast``'s form) -> ``{node: reply}``."""
    merged: dict[str, Any] = {}
    for item in replies or []:
        merged.update(item)
    return merged


def _nodes(destination: str | Iterable[str] | None) -> list[str] | None:
    if destination is None:
        return None
    nodes = [destination] if isinstance(destination, str) else list(destination)
    return nodes or None


class Control:
    """``app.control``: send commands to workers through the database."""

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def using(self) -> str:
        return self.app.conf.broker_alias

    def inspect(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0) -> Inspect:
        return Inspect(self, destination, timeout)

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: str | Iterable[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
    ) -> list[dict[str, Any]] | None:
        """Send ``command`` to the ``destination`` nodes (all when None).

        With ``reply=True``, waits up to ``timeout`` seconds and returns the replies as
        ``[{node: reply}, ...]``; the command row must be visible to workers, so this cannot be
        called inside a transaction.
        """
        if command not in COMMANDS:
            raise DjqueueError(
                f"Unknown control command {command!r}; known: {', '.join(sorted(COMMANDS))}"
            )
        nodes = _nodes(destination)
        connection = connections[self.using]
        if reply and connection.in_atomic_block:
            raise DjqueueError(
                "Cannot wait for control replies inside a transaction: workers would not see the "
                "command before it commits. Call it outside transaction.atomic() or with reply=False."
            )
        ttl = timeout if reply else max(timeout, COMMAND_TTL)
        row = ControlCommand.objects.using(self.using).create(
            name=command, arguments=arguments or {}, destination=nodes, reply=reply,
            expires_at=db_now_plus(ttl),
        )
        operations(self.using).announce_control()  # wake listening workers (at commit)
        logger.debug("Sent control command %s #%s to %s", command, row.pk, nodes or "all")
        if not reply:
            return None
        return self._collect(row.pk, nodes, timeout, limit)

    def _collect(
        self, command_id: int, nodes: list[str] | None, timeout: float, limit: int | None
    ) -> list[dict[str, Any]]:
        expected = set(nodes or live_nodes(self.using, float(self.app.conf.DJQUEUE_WORKER_LOST_TIMEOUT)))
        deadline = time.monotonic() + timeout
        replies: dict[int, tuple[str, Any]] = {}
        while True:
            for pk, hostname, data in (
                ControlReply.objects.using(self.using)
                .filter(command_id=command_id).exclude(pk__in=list(replies))
                .values_list("pk", "hostname", "data")
            ):
                replies[pk] = (hostname, data)
            seen = {hostname for hostname, _ in replies.values()}
            if (limit is not None and len(replies) >= limit) or (expected and seen >= expected):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(REPLY_POLL_INTERVAL)
        ordered = [replies[pk] for pk in sorted(replies)]
        if limit is not None:
            ordered = ordered[:limit]
        return [{hostname: data} for hostname, data in ordered]

    # Celery's named commands.

    def ping(self, destination: str | Iterable[str] | None = None,
             timeout: float = 1.0) -> list[dict[str, Any]] | None:
        return self.broadcast("ping", {}, destination, reply=True, timeout=timeout)

    def rate_limit(self, task_name: str, rate_limit: str | float | int | None,
                   destination: str | Iterable[str] | None = None, reply: bool = False,
                   timeout: float = 1.0) -> list[dict[str, Any]] | None:
        """Change a task's rate limit at run time. A valid rate for a task registered here is
        stored at once, so workers started later use it too; each worker that receives the command
        applies it and replies, or replies with an error (bad rate, task it does not know)."""
        try:
            normalize_rate(rate_limit)
        except ValueError:
            pass  # the workers reply with the error; nothing is stored
        else:
            if task_name in self.app.tasks:
                store_rate_limit(task_name, rate_limit, self.using)
        return self.broadcast("rate_limit", {"task_name": task_name, "rate_limit": rate_limit},
                              destination, reply, timeout)

    def reset_rate_limit(self, task_name: str, destination: str | Iterable[str] | None = None,
                         reply: bool = False, timeout: float = 1.0) -> list[dict[str, Any]] | None:
        """Remove ``task_name``'s override (stored at once): every worker goes back to the
        configured limit (the task's, its annotation or ``CELERY_DEFAULT_RATE_LIMIT``)."""
        RateLimitOverride.objects.using(self.using).filter(task_name=task_name).delete()
        return self.broadcast("reset_rate_limit", {"task_name": task_name}, destination, reply,
                              timeout)

    def pause_queue(self, queue: str, destination: str | Iterable[str] | None = None,
                    reply: bool = False, timeout: float = 1.0) -> list[dict[str, Any]] | None:
        """Pause ``queue`` (stored: it survives restarts): no worker claims its messages, which
        wait; the workers hand back what they reserved from it."""
        identifiers.check("queue name", queue, identifiers.MAX_QUEUE)
        flow_store.pause(queue, self.using)
        return self.broadcast("pause_queue", {"queue": queue}, destination, reply, timeout)

    def resume_queue(self, queue: str, destination: str | Iterable[str] | None = None,
                     reply: bool = False, timeout: float = 1.0) -> list[dict[str, Any]] | None:
        """Remove ``queue``'s pause; workers claim from it again."""
        flow_store.resume(queue, self.using)
        return self.broadcast("resume_queue", {"queue": queue}, destination, reply, timeout)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: str | Iterable[str] | None = None, reply: bool = False,
                   timeout: float = 1.0) -> list[dict[str, Any]] | None:
        return self.broadcast("time_limit", {"task_name": task_name, "soft": soft, "hard": hard},
                              destination, reply, timeout)

    def revoke(self, task_id: str | Sequence[str], destination: str | Iterable[str] | None = None,
               terminate: bool = False, signal: str | int = "SIGTERM", reply: bool = False,
               timeout: float = 1.0) -> list[dict[str, Any]] | None:
        """Revoke task ids: stored as rows (every worker, also a later one, obeys them), then the
        running workers are told to look at once."""
        ids = revocation.revoke(task_id, terminate=terminate, signal=signal, using=self.using)
        return self.broadcast("revoke", {"task_ids": ids}, destination, reply, timeout)

    def add_consumer(self, queue: str, destination: str | Iterable[str] | None = None,
                     reply: bool = False, timeout: float = 1.0) -> list[dict[str, Any]] | None:
        return self.broadcast("add_consumer", {"queue": queue}, destination, reply, timeout)

    def cancel_consumer(self, queue: str, destination: str | Iterable[str] | None = None,
                        reply: bool = False, timeout: float = 1.0) -> list[dict[str, Any]] | None:
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, reply, timeout)

    def pool_grow(self, n: int = 1, destination: str | Iterable[str] | None = None,
                  reply: bool = False, timeout: float = 1.0) -> list[dict[str, Any]] | None:
        return self.broadcast("pool_grow", {"n": n}, destination, reply, timeout)

    def pool_shrink(self, n: int = 1, destination: str | Iterable[str] | None = None,
                    reply: bool = False, timeout: float = 1.0) -> list[dict[str, Any]] | None:
        return self.broadcast("pool_shrink", {"n": n}, destination, reply, timeout)

    def shutdown(self, destination: str | Iterable[str] | None = None, reply: bool = False,
                 timeout: float = 1.0) -> list[dict[str, Any]] | None:
        """Warm shutdown: the workers stop claiming, finish what runs and exit."""
        return self.broadcast("shutdown", {}, destination, reply, timeout)

    def purge(self, queues: Sequence[str] | None = None) -> int:
        """Delete every waiting message of ``queues`` (default: the default queue)."""
        return operations(self.using).purge(list(queues or [self.app.conf.CELERY_DEFAULT_QUEUE]))


class Inspect:
    """``app.control.inspect()``: ask workers about themselves; each method returns
    ``{node: reply}`` or ``None`` when no worker replied in time."""

    def __init__(self, control: Control, destination: str | Sequence[str] | None,
                 timeout: float) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.control.broadcast(command, arguments, self.destination, reply=True,
                                         timeout=self.timeout)
        return merge_replies(replies) or None

    def active(self) -> dict[str, Any] | None:
        return self._request("active")

    def reserved(self) -> dict[str, Any] | None:
        return self._request("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        return self._request("scheduled")

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        """Task names; ``registered("rate_limit")`` adds those attributes that are set, as
        ``"tasks.add [rate_limit=10/s]"`` (by default ``rate_limit``)."""
        if taskinfoitems:
            return self._request("registered", taskinfoitems=list(taskinfoitems))
        return self._request("registered")

    registered_tasks = registered

    def clock(self) -> dict[str, Any] | None:
        """Each worker's logical clock, ``{"clock": n}`` (see djqueue/worker/inspection.py)."""
        return self._request("clock")

    def report(self) -> dict[str, Any] | None:
        """Versions and settings for a bug report, ``{"ok": text}``."""
        return self._request("report")

    def revoked(self) -> dict[str, Any] | None:
        return self._request("revoked")

    def stats(self) -> dict[str, Any] | None:
        return self._request("stats")

    def active_queues(self) -> dict[str, Any] | None:
        return self._request("active_queues")

    def ping(self) -> dict[str, Any] | None:
        return self._request("ping")

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        return self._request("conf", with_defaults=with_defaults)

    def query_task(self, *ids: str | Sequence[str]) -> dict[str, Any] | None:
        flat = [i for item in ids for i in ([item] if isinstance(item, str) else item)]
        return self._request("query_task", ids=flat)
