"""A worker's events (``-E``, ``CELERY_SEND_EVENTS``), as rows of ``djqueue_event``.

Task events are buffered and written together, one ``INSERT`` per loop iteration whatever the
number of tasks (:meth:`Events.flush`); worker events are written when they happen, the
heartbeat's from the heartbeat thread, which also deletes events older than
``DJQUEUE_EVENTS_EXPIRES`` about once a minute. Without events every method returns at once.

An event is telemetry, not state: one the database refuses (a value it cannot hold) is logged
and dropped; during an outage the worker waits, as it does for its rounds.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import DataError, IntegrityError
from django.utils import timezone

from .. import __version__, states
from ..events.models import Event
from ..exceptions import DecodeError
from ..serialization import loads, safe_repr

if TYPE_CHECKING:
    from ..broker.rows import Claimed
    from .execution import Job, Outcome
    from .lifecycle import Lifecycle

logger = logging.getLogger("djqueue.events")

PRUNE_INTERVAL = 60.0
REFUSED = (DataError, IntegrityError)


def _outcome_event(outcome: Outcome) -> tuple[str, dict[str, Any]] | None:
    """Celery's event type and fields for an outcome; None for a message given back (it is
    received again)."""
    if outcome.action in ("release", "requeue"):
        return None
    if outcome.state == states.SUCCESS:
        return "task-succeeded", {"result": outcome.result_repr, "runtime": outcome.runtime}
    if outcome.action == "retry":
        return "task-retried", {"exception": outcome.result_repr,
                                "traceback": outcome.traceback or ""}
    if outcome.state == states.REVOKED:
        return "task-revoked", {"reason": outcome.result_repr}
    if outcome.action == "reject":
        return "task-rejected", {"exception": outcome.result_repr}
    return "task-failed", {"exception": outcome.result_repr, "traceback": outcome.traceback or ""}


class Events:
    """The events of one worker."""

    def __init__(self, worker: Lifecycle) -> None:
        self.worker = worker
        self.enabled = bool(worker.app.conf.CELERY_SEND_EVENTS)
        self.expires = float(worker.app.conf.DJQUEUE_EVENTS_EXPIRES)
        self._buffer: list[Event] = []
        self._next_prune = 0.0

    def _event(self, kind: str, job: Job | Claimed | None = None, **fields: Any) -> Event:
        return Event(type=kind, hostname=self.worker.hostname, timestamp=timezone.now(),
                     task_id=job.task_id if job else "", task_name=job.task_name if job else "",
                     fields=json.dumps(fields, default=str))

    # Task events: buffered.

    def received(self, messages: Iterable[Claimed]) -> None:
        if not self.enabled:
            return
        accept = self.worker.app.conf.CELERY_ACCEPT_CONTENT or []
        for message in messages:
            try:
                payload = loads(message.body, message.content_type, accept)
            except DecodeError:
                payload = {}
            self._buffer.append(self._event(
                "task-received", message, args=safe_repr(payload.get("args", [])),
                kwargs=safe_repr(payload.get("kwargs", {})), retries=message.retries,
                eta=payload.get("eta"), expires=payload.get("expires"), queue=message.queue))

    def started(self, jobs: Iterable[Job]) -> None:
        if self.enabled:
            self._buffer.extend(self._event("task-started", job) for job in jobs)

    def outcomes(self, outcomes: Iterable[Outcome]) -> None:
        if not self.enabled:
            return
        for outcome in outcomes:
            made = _outcome_event(outcome)
            if made is not None:
                self._buffer.append(self._event(made[0], outcome.job, **made[1]))

    def flush(self) -> None:
        """Write the buffered task events, one statement for all of them."""
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        self.worker.with_db_retry(lambda: self._write(rows))

    def _write(self, rows: list[Event]) -> None:
        try:
            Event.objects.using(self.worker.using).bulk_create(rows)
        except REFUSED as exc:
            logger.error("%d event(s) dropped: the database refused them (%s).", len(rows), exc)

    # Worker events: written at once.

    def _worker_event(self, kind: str) -> Event:
        worker = self.worker
        return self._event(
            kind, freq=max(worker.heartbeat_timeout / 6, 0.2), sw_ident="djqueue",
            sw_ver=__version__, sw_sys=platform.system(), pid=os.getpid(),
            active=len(worker.pool.running()), processed=worker.processed)

    def online(self) -> None:
        if self.enabled:
            self.worker.with_db_retry(lambda: self._write([self._worker_event("worker-online")]))

    def offline(self) -> None:
        if self.enabled:
            self.flush()
            self.worker.with_db_retry(lambda: self._write([self._worker_event("worker-offline")]))

    def heartbeat(self) -> None:
        """From the heartbeat thread (inside its database error handling): a heartbeat event,
        and now and then the deletion of expired events."""
        if not self.enabled:
            return
        self._worker_event("worker-heartbeat").save(using=self.worker.using)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL
            prune(self.worker.using, self.expires)


def prune(using: str, expires: float) -> int:
    """Delete events older than ``expires`` seconds; returns how many."""
    cutoff = timezone.now() - datetime.timedelta(seconds=expires)
    deleted, _ = Event.objects.using(using).filter(timestamp__lt=cutoff).delete()
    return deleted
