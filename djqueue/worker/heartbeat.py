"""Worker rows and heartbeats, and recovery of the messages of workers that died.

Each worker process has a :class:`~djqueue.models.WorkerNode` row. A background thread beats every
``timeout / 6`` seconds: it refreshes the row, extends the lease of every message the process
knows it holds (:meth:`~djqueue.worker.lifecycle.Lifecycle.held_ids`), recovers messages whose
lease ran out (their worker stopped beating), following the delivery rules in
:meth:`djqueue.broker.statements.Statements.recover_expired_leases`, and vacuums the message table
when it is bloated (:meth:`djqueue.broker.base.Operations.vacuum_if_bloated`). The thread is
separate from the worker loop so that a long task in the ``solo`` pool does not look like a dead
worker.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db import DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.functions import Now
from django.utils import timezone

from .. import signals
from ..broker import operations
from .. import states
from ..backends import ResultRecord
from ..exceptions import WorkerLostError
from ..models import WorkerNode
from ..serialization import dumps, exception_to_data
from . import workflow_writes

if TYPE_CHECKING:
    from .loop import Worker

logger = logging.getLogger("djqueue.heartbeat")

THREAD_NAME = "djqueue-heartbeat"


def register(worker: Worker) -> int:
    """Create this process's worker row; returns its id (the ``owner`` of claimed messages)."""
    warn_if_name_taken(worker)
    node = WorkerNode.objects.using(worker.using).create(
        hostname=worker.hostname,
        pid=os.getpid(),
        host=socket.gethostname(),
        queues=",".join(worker.queues),
        pool=worker.pool_name,
        concurrency=worker.concurrency,
        heartbeat_at=Now(),
    )
    return node.id


def warn_if_name_taken(worker: Worker) -> None:
    """Warn, as Celery does, when a live worker already has this node name.

    Remote-control replies and the admin's worker rows are keyed by node name, so two live nodes
    of one name mix them. Like Celery, djqueue warns rather than refuses: a worker restarted
    after ``kill -9`` finds its predecessor's row still fresh until the lease runs out, and must
    start. A row of this host whose process is gone is that case, and is not warned about.
    """
    since = Now() - datetime.timedelta(seconds=worker.heartbeat_timeout)
    others = WorkerNode.objects.using(worker.using).filter(
        hostname=worker.hostname, stopped_at=None, lost_at=None, heartbeat_at__gte=since)
    for other in others:
        if other.host == socket.gethostname() and not _running(other.pid):
            continue
        logger.warning(
            "A node named %s is already using this name (pid %s on %s, last heartbeat %s). "
            "Stop that node, or give each node a unique name with -n (e.g. -n worker2@%%h): "
            "remote-control replies and worker rows of nodes that share a name are mixed up.",
            worker.hostname, other.pid, other.host or "an unknown host",
            other.heartbeat_at.isoformat(timespec="seconds"))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def recover(
    using: str, backend_store: Callable[[list[ResultRecord]], None], serializer: str,
    max_deliveries: int | None = None,
) -> int:
    """Recover messages of dead workers; returns how many started tasks were marked lost.
    One transaction: a lost task of a workflow fails its chain and chord with its result."""
    with transaction.atomic(using=using):
        return _recover(using, backend_store, serializer, max_deliveries)


def _recover(
    using: str, backend_store: Callable[[list[ResultRecord]], None], serializer: str,
    max_deliveries: int | None,
) -> int:
    lost = operations(using).recover_expired_leases(max_deliveries)
    now = timezone.now()
    if lost:
        records, errors = [], []
        for message in lost:
            text = (f"Worker {message.worker or '?'} stopped sending heartbeats while the task "
                    "ran")
            if message.acks_late:
                text += (f"; the task was started {message.deliveries} times and its worker was "
                         "lost each time: set aside, not run again (DJQUEUE_MAX_DELIVERIES).")
            else:
                text += " (at-most-once: not run again)."
            errors.append(WorkerLostError(text))
            content_type, result = dumps(exception_to_data(errors[-1]), serializer)
            records.append(ResultRecord(message.task_id, states.FAILURE, message.task_name,
                                        content_type, result, worker=message.worker,
                                        date_done=now, queue=message.queue))
            logger.error("Task %s[%s] lost: worker %s stopped sending heartbeats.",
                         message.task_name, message.task_id, message.worker)
        backend_store(records)
        workflow_writes.lost(using, lost, errors)
    return len(lost)


class Heartbeat(threading.Thread):
    """Beats for one worker until :meth:`stop`.

    With ``shared`` (the worker loop's Django connection, lent under ``db_lock``) the heartbeat
    opens no connection of its own: the loop and the heartbeat take turns on one. Without it (the
    ``solo`` pool, whose tasks run on the loop's thread and connection while the heartbeat must
    go on) it opens one per beat and closes it before releasing ``fork_lock``, so that a process
    forked meanwhile never inherits it.
    """

    def __init__(self, worker: Worker, fork_lock: threading.Lock, db_lock: threading.RLock,
                 shared: BaseDatabaseWrapper | None = None) -> None:
        super().__init__(name=THREAD_NAME, daemon=True)
        self.worker = worker
        self.interval = max(worker.heartbeat_timeout / 6, 0.2)
        self.fork_lock = fork_lock
        self.db_lock = db_lock
        self.shared = shared
        self._stopping = threading.Event()
        self._poked = threading.Event()
        self._known_dead = 0  # dead row versions the worker reported with its poke

    def run(self) -> None:
        if self.shared is not None:  # this thread's queries use the loop's connection
            connections[self.worker.using] = self.shared
        while True:
            self._poked.wait(self.interval)
            self._poked.clear()
            if self._stopping.is_set():
                return
            try:
                self.beat()
            except Exception:  # a dead heartbeat would let others take our messages: keep going
                logger.exception("Heartbeat failed; will try again.")
            else:
                signals.heartbeat_sent.send(sender=self)

    def poke(self, dead_rows: int = 0) -> None:
        """Beat now rather than at the next interval (the worker does when it turns idle after
        a burst that left ``dead_rows`` dead row versions, so the message table is vacuumed
        before the next one)."""
        self._known_dead = dead_rows
        self._poked.set()

    def beat(self) -> None:
        """One heartbeat, on the loop's connection while the loop waits (``db_lock``), or on a
        connection of its own (see the class)."""
        worker = self.worker
        with self.db_lock, self.fork_lock:
            try:
                # Heartbeats are on the database's clock, as leases are (Operations.now_sql).
                WorkerNode.objects.using(worker.using).filter(pk=worker.node_id).update(
                    heartbeat_at=Now(),
                    processed=worker.processed,
                    active=json.dumps(worker.active_tasks()),
                )
                worker.events.heartbeat()
                broker = operations(worker.using)
                broker.extend_leases(worker.node_id, worker.held_ids(), worker.heartbeat_timeout)
                backend = worker.backend
                recover(worker.using,
                        backend.store if backend.enabled else (lambda records: None),
                        worker.result_serializer, worker.max_deliveries)
                WorkerNode.objects.using(worker.using).filter(
                    stopped_at=None, lost_at=None,
                    heartbeat_at__lt=Now() - datetime.timedelta(seconds=worker.heartbeat_timeout),
                ).update(lost_at=Now())
                known_dead, self._known_dead = self._known_dead, 0
                broker.vacuum_if_bloated(known_dead)
                worker.tally.beat(worker.using, worker.node_id)  # last: leases come first
            except DatabaseError as exc:
                logger.error("Heartbeat failed (database error: %s); will try again.", exc)
                self._close()  # perhaps broken: the next use opens a new one
            finally:
                if self.shared is None:
                    self._close()

    def _close(self) -> None:
        try:
            connections.close_all()
        except DatabaseError:
            pass  # already broken; a new connection is opened for the next use

    def stop(self) -> None:
        self._stopping.set()
        self._poked.set()
        self.join(timeout=10)
