"""Remote control, worker side: one handler function per command, and the poller that runs them.

:class:`ControlPanel` is called from the worker loop; twice a second (more often when the
worker polls its queues more often) it reads the control commands that arrived since the worker
started (:mod:`djqueue.client.control` writes them), runs the handler for each one addressed to this
node, and stores a reply row when the sender waits for one. Handlers run in the worker's main
thread, between loop iterations, so they may change the worker. A worker busy in the ``solo`` pool
answers when its task ends. On PostgreSQL, a NOTIFY on the command channel could wake the loop at
once; until then this poll is the only way commands arrive.
A handler checks every argument first (:mod:`djqueue.worker.control_arguments`), then returns
``{"ok": message}`` or raises :class:`ControlError` (replied as ``{"error": …}``); inspection
handlers return their data. Any other exception is logged and replied as an error: no command
stops a worker.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.db.models import Max
from django.db.models.functions import Now
from django.utils import timezone

from ..broker import operations
from . import control_arguments as check, inspection
from ..client.control import db_now_plus
from ..client.unique import delete_released
from ..flow.store import paused_queues
from .control_flow import load, pause_queue, rate_limit, reset_rate_limit, resume_queue
from .control_arguments import ControlError
from ..conf import DEFAULTS
from ..models import ControlCommand, ControlReply, Message, Revocation, WorkerNode

if TYPE_CHECKING:
    from .loop import Worker

logger = logging.getLogger("djqueue.control")

#: A worker looks for commands this often, or as often as it polls its queues when that is more
#: often (``BROKER_TRANSPORT_OPTIONS["polling_interval"]``), but never more than 20 times a second.
POLL_INTERVAL = 0.5
MIN_POLL_INTERVAL = 0.05
#: Expired commands and old replies are deleted this long after they stop mattering.
RETENTION = 300.0
CLEANUP_INTERVAL = 60.0
#: ``inspect revoked`` and ``inspect scheduled`` list at most this many entries.
LIST_LIMIT = 1000


# Helpers for the handlers.

def _update_node(worker: Worker, **fields: Any) -> None:
    WorkerNode.objects.using(worker.using).filter(pk=worker.node_id).update(**fields)


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


# The handlers: control commands.

def ping(worker: Worker) -> dict[str, str]:
    return {"ok": "pong"}


def time_limit(worker: Worker, task_name: str, soft: float | None = None,
               hard: float | None = None) -> dict[str, str]:
    task = check.task_name(worker.app.tasks, task_name)
    soft, hard = check.time_limits(soft, hard)
    task.soft_time_limit, task.time_limit = soft, hard
    logger.info("New time limits for tasks of type %s: soft=%s hard=%s", task_name, soft, hard)
    return {"ok": "time limits set successfully"}


def revoke(worker: Worker, task_ids: list[str]) -> dict[str, str]:
    # The revocation rows were written by the sender; look at what this worker holds right now.
    task_ids = check.task_ids(task_ids)
    worker.check_revocations_soon()
    return {"ok": f"tasks {', '.join(task_ids)} flagged as revoked"}


def add_consumer(worker: Worker, queue: str) -> dict[str, str]:
    queue = check.queue(queue)
    if not worker.consume(queue):
        return {"ok": f"already consuming from {queue!r}"}
    _update_node(worker, queues=",".join(worker.queues))
    logger.info("Started consuming from queue %r.", queue)
    return {"ok": f"add consumer {queue}"}


def cancel_consumer(worker: Worker, queue: str) -> dict[str, str]:
    queue = check.queue(queue)
    if queue not in worker.queues:
        raise ControlError(f"not consuming from {queue!r}")
    worker.queues.remove(queue)
    _update_node(worker, queues=",".join(worker.queues))
    logger.info("Stopped consuming from queue %r.", queue)
    return {"ok": f"no longer consuming from {queue}"}


def _resize(worker: Worker, concurrency: int) -> None:
    try:
        worker.resize(concurrency)
    except NotImplementedError as exc:
        raise ControlError(str(exc)) from None
    _update_node(worker, concurrency=concurrency)
    logger.info("Pool resized to %d.", concurrency)


def pool_grow(worker: Worker, n: int = 1) -> dict[str, str]:
    n = check.count(n)
    if worker.concurrency + n > check.MAX_POOL:
        raise ControlError(f"cannot grow the pool beyond {check.MAX_POOL} "
                           f"(it has {worker.concurrency})")
    _resize(worker, worker.concurrency + n)
    return {"ok": f"pool will grow (to {worker.concurrency})"}


def pool_shrink(worker: Worker, n: int = 1) -> dict[str, str]:
    n = check.count(n)
    if worker.concurrency - n < 1:
        raise ControlError(f"cannot shrink the pool below 1 (it has {worker.concurrency})")
    _resize(worker, worker.concurrency - n)
    return {"ok": f"pool will shrink (to {worker.concurrency})"}


def shutdown(worker: Worker) -> dict[str, str]:
    logger.warning("Got shutdown from remote: warm shutdown.")
    worker.request_stop()
    return {"ok": "shutting down"}


# The handlers: inspection.

def active(worker: Worker) -> list[dict[str, Any]]:
    return [info for state, info in inspection.held(worker).values() if state == "active"]


def reserved(worker: Worker) -> list[dict[str, Any]]:
    return [info for state, info in inspection.held(worker).values() if state == "reserved"]


def scheduled(worker: Worker) -> list[dict[str, Any]]:
    """Messages of this worker's queues that wait for their eta (they stay rows until then, so
    workers consuming the same queue list the same ones)."""
    rows = (Message.objects.using(worker.using)
            .filter(state=Message.State.READY, queue__in=worker.queues,
                    available_at__gt=timezone.now())
            .order_by("available_at")[:LIST_LIMIT])
    return [{"eta": m.available_at.isoformat(), "priority": m.priority,
             "request": inspection.request_info(worker, m)} for m in rows]


def registered(worker: Worker, taskinfoitems: list[str] | None = None) -> list[str]:
    return inspection.registered(worker, taskinfoitems)


def revoked(worker: Worker) -> list[str]:
    return list(Revocation.objects.using(worker.using).order_by("-created_at")
                .values_list("task_id", flat=True)[:LIST_LIMIT])


def stats(worker: Worker) -> dict[str, Any]:
    return {
        "hostname": worker.hostname, "pid": os.getpid(),
        "uptime": round(worker.uptime(), 3),
        "total": dict(worker.total),
        "processed": worker.processed, "prefetch_count": worker.prefetch_limit,
        "pool": inspection.pool(worker), "clock": str(inspection.clock(worker)["clock"]),
        "rusage": inspection.rusage(),
        "broker": {"transport": "django", "alias": worker.using,
                   "vendor": operations(worker.using).vendor},
        "queues": list(worker.queues),
        "rate_limits": {name: rate for name, task in sorted(worker.app.tasks.items())
                        if (rate := worker.throttle.overrides.get(name, task.rate_limit))
                        and rate != "0"},
    }


def active_queues(worker: Worker) -> list[dict[str, Any]]:
    return [inspection.queue_info(queue) for queue in worker.queues]


def conf(worker: Worker, with_defaults: bool = False) -> dict[str, Any]:
    """The worker's queue settings (non-defaults only unless asked); passwords in URLs hidden."""
    with_defaults = check.flag(with_defaults, "with_defaults")
    settings = worker.app.conf
    shown = {}
    for name in sorted(DEFAULTS):
        value = settings[name]
        if with_defaults or value != DEFAULTS[name]:
            shown[name] = _URL_PASSWORD.sub(r"\1********@", value) if isinstance(value, str) else inspection.as_data(value)
    return shown


def query_task(worker: Worker, ids: list[str]) -> dict[str, Any]:
    ids = check.task_ids(ids, stored=False)
    held = inspection.held(worker)
    return {task_id: list(held[task_id]) for task_id in ids if task_id in held}


HANDLERS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (
        ping, rate_limit, time_limit, revoke, add_consumer, cancel_consumer, pool_grow,
        pool_shrink, shutdown, active, reserved, scheduled, registered, revoked, stats,
        active_queues, conf, query_task, inspection.clock, inspection.report, reset_rate_limit,
        pause_queue, resume_queue,
    )
}


class ControlPanel:
    """Polls for control commands addressed to one worker and runs their handlers."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._after_id = 0
        self._handled: set[int] = set()
        self._next_poll = 0.0
        self._next_cleanup = 0.0
        self.interval = max(min(POLL_INTERVAL, worker.poll_interval), MIN_POLL_INTERVAL)

    def start(self) -> None:
        """Commands sent before this worker started are not for it; stored overrides are.

        The first look for commands comes ``POLL_INTERVAL`` after the start.
        """
        using = self.worker.using
        self._after_id = ControlCommand.objects.using(using).aggregate(m=Max("id"))["m"] or 0
        load(self.worker)  # rate-limit overrides and paused queues
        now = time.monotonic()
        self._next_poll, self._next_cleanup = now + POLL_INTERVAL, now + CLEANUP_INTERVAL

    def seconds_until_due(self) -> float:
        return max(0.0, self._next_poll - time.monotonic())

    def poll(self, now: bool = False) -> None:
        """Run the commands that arrived since the last poll, if a poll is due (or ``now``: a
        command was announced by ``NOTIFY``)."""
        moment = time.monotonic()
        if moment < self._next_poll and not now:
            return
        self._next_poll = moment + self.interval
        commands = self.worker.with_db_retry(self._pending)
        self._handled &= {command.pk for command in commands}  # forget expired ones
        for command in commands:
            if command.pk in self._handled:
                continue
            self._handled.add(command.pk)
            if not self._addressed(command):
                continue
            data = self.run(command.name, command.arguments)
            if command.reply:
                self._reply(command.pk, data)
        if moment >= self._next_cleanup:
            self._next_cleanup = moment + CLEANUP_INTERVAL
            self.worker.with_db_retry(self._cleanup)

    def _addressed(self, command: ControlCommand) -> bool:
        """Whether ``command`` is for this worker: no destination, or one naming it. A row's
        destination that is not a node name or a list of them names no worker."""
        destination = command.destination
        if not destination:
            return True
        if isinstance(destination, str):
            destination = [destination]
        if not isinstance(destination, list):
            logger.error("Control command %s #%s has destination %r, which names no worker; "
                         "ignored.", command.name, command.pk, destination)
            return False
        return self.worker.hostname in destination

    def _reply(self, command_id: int, data: Any) -> None:
        """Store a reply. One the table cannot hold (a NUL character on PostgreSQL, a value JSON
        cannot encode) is logged and replaced by an error reply: the worker carries on."""
        def store(data: Any) -> Callable[[], ControlReply]:
            return lambda: ControlReply.objects.using(self.worker.using).create(
                command_id=command_id, hostname=self.worker.hostname, data=data)

        try:
            self.worker.with_db_retry(store(data))
        except (DatabaseError, TypeError, ValueError) as exc:
            logger.exception("The reply to control command #%s could not be stored", command_id)
            error = f"the reply could not be stored ({type(exc).__name__}): see the worker's log"
            self.worker.with_db_retry(store({"error": error}))

    def _pending(self) -> list[ControlCommand]:
        return list(ControlCommand.objects.using(self.worker.using)
                    .filter(pk__gt=self._after_id, expires_at__gt=Now()).order_by("pk"))

    def run(self, name: str, arguments: dict[str, Any]) -> Any:
        """Run one handler; every failure becomes an error reply, never a dead worker."""
        handler = HANDLERS.get(name)
        if handler is None:
            logger.error("Unknown control command %r received; ignored.", name)
            return {"error": f"unknown control command {name!r}"}
        try:
            inspect.signature(handler).bind(self.worker, **(arguments or {}))
        except TypeError as exc:
            return {"error": f"bad arguments for {name}: {exc}"}
        try:
            return handler(self.worker, **(arguments or {}))
        except ControlError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a handler bug must not stop the worker
            logger.exception("Control command %s failed", name)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _cleanup(self) -> None:
        using = self.worker.using
        paused = paused_queues(using)
        if paused != self.worker.paused:  # a pause stored or removed without a command
            self.worker.pause(paused)
        delete_released(using)  # unique keys whose message ran (or whose period passed)
        ControlCommand.objects.using(using).filter(expires_at__lt=db_now_plus(-RETENTION)).delete()
        cutoff = timezone.now() - datetime.timedelta(seconds=RETENTION)
        ControlReply.objects.using(using).filter(created_at__lt=cutoff).delete()
