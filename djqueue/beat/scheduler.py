"""Beat: the scheduler that sends periodic tasks, with one active scheduler among many.

Leadership is a lease on the single :class:`BeatState` row: the active scheduler renews it every
tick; a standby takes it when it has run out (``DJQUEUE_BEAT_LEASE_SECONDS`` after the leader's
last renewal), so a dead leader is replaced within about that time. A beat that stops releases it.

Each due run is sent in one transaction that advances the entry's ``last_run_at`` (only forward,
only while it is enabled), inserts the (entry, scheduled time) key and enqueues the task: a
scheduler with stale information, or two at once, cannot send a run twice.

Missed runs: when beat finds several run times of an entry in the past (it was stopped, or the
database was away), it sends one run, for the latest of them, and the schedule goes on from there.

:meth:`Beat.tick` is one iteration with an injectable clock; :meth:`Beat.run` repeats it.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing
import os
import select
import signal
import socket
import time
import uuid
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import signals
from ..broker import operations
from ..client.base import App
from .models import STATE_ID, BeatState, PeriodicTask, PeriodicTaskRun
from .sync import sync_from_settings

logger = logging.getLogger("djqueue.beat")

#: Seconds between looks at the schedule when ``CELERYBEAT_MAX_LOOP_INTERVAL`` is 0.
DEFAULT_MAX_INTERVAL = 1.0
#: How long the runs sent are kept, and how often older ones are deleted.
RUN_HISTORY = datetime.timedelta(days=1)
CLEANUP_EVERY = 3600.0


class _Superseded(Exception):
    """The entry changed under us (disabled, or the run was already sent): send nothing."""


class Beat:
    def __init__(
        self,
        app: App,
        *,
        lease_seconds: float | None = None,
        max_interval: float | None = None,
        name: str | None = None,
    ) -> None:
        conf = app.conf
        self.app = app
        self.using = conf.broker_alias
        self.lease_seconds = float(lease_seconds or conf.DJQUEUE_BEAT_LEASE_SECONDS)
        self.max_interval = float(
            max_interval or conf.CELERYBEAT_MAX_LOOP_INTERVAL or DEFAULT_MAX_INTERVAL
        )
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.is_leader = False
        self._state_ready = False
        self._standby_logged = False
        self._version: int | None = None
        self._entries: dict[int, PeriodicTask] = {}
        self._next_run: dict[int, datetime.datetime] = {}
        self._next_cleanup = 0.0
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # Leadership.

    def _renew_or_take_lease(self) -> int | None:
        """Hold the lease for another ``lease_seconds``; the schedule version if we are leader.
        The lease is on the broker's clock (the database's on PostgreSQL; on SQLite every process
        is on one host, whose clock is the database's)."""
        broker = operations(self.using)
        now, now_params = broker.now_sql()
        until, until_params = broker.lease_sql(self.lease_seconds)
        sql = (
            f"UPDATE djqueue_beatstate SET leader = %s, lease_until = {until} WHERE id = %s AND "
            f"(leader = %s OR lease_until IS NULL OR lease_until < {now})"
        )
        params = [self.name, *until_params, STATE_ID, self.name, *now_params]
        # Then the version, in a statement of its own (MySQL has no UPDATE … RETURNING): the
        # lease just taken cannot pass to another beat in between.
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            if cursor.rowcount != 1:
                return None
            cursor.execute("SELECT version FROM djqueue_beatstate WHERE id = %s", [STATE_ID])
            row = cursor.fetchone()
        return None if row is None else int(row[0])

    def release(self) -> None:
        """Give up leadership so a standby takes over at once."""
        if self.is_leader:
            BeatState.objects.using(self.using).filter(pk=STATE_ID, leader=self.name).update(
                leader="", lease_until=None
            )
            self.is_leader = False
            logger.info("beat: Released leadership.")

    # One iteration.

    def tick(self, now: datetime.datetime | None = None) -> float:
        """Renew or seek leadership; as leader, send every due run. Returns seconds to sleep.

        ``now`` (default: the current time) is the clock the schedule is read against; leases
        always use real time.
        """
        if not self._state_ready:
            BeatState.objects.using(self.using).bulk_create([BeatState(pk=STATE_ID)],
                                                            ignore_conflicts=True)
            self._state_ready = True
        version = self._renew_or_take_lease()
        if version is None:
            if self.is_leader:
                logger.warning("beat: Lost leadership (the lease ran out); standing by.")
            elif not self._standby_logged:
                leader = BeatState.objects.using(self.using).get(pk=STATE_ID).leader
                logger.info("beat: %s is the active scheduler; standing by.", leader)
            self.is_leader, self._standby_logged = False, True
            return self.max_interval
        if not self.is_leader:
            self.is_leader, self._standby_logged = True, False
            logger.info("beat: Acting as the active scheduler (%s).", self.name)
            sync_from_settings(self.app.conf.CELERYBEAT_SCHEDULE, self.using)
            self._version = None
        if version != self._version:
            self._reload()
            self._version = version
        now = now or timezone.now()
        for pk in [pk for pk, when in self._next_run.items() if when <= now]:
            self._send(self._entries[pk], now)
        if time.monotonic() >= self._next_cleanup:
            PeriodicTaskRun.objects.using(self.using).filter(
                scheduled_at__lt=now - RUN_HISTORY
            ).delete()
            self._next_cleanup = time.monotonic() + CLEANUP_EVERY
        if not self._next_run:
            return self.max_interval
        until_next = (min(self._next_run.values()) - now).total_seconds()
        return max(0.0, min(self.max_interval, until_next))

    def _reload(self) -> None:
        tz = self.app.conf.timezone
        self._entries, self._next_run = {}, {}
        for entry in PeriodicTask.objects.using(self.using).filter(enabled=True):
            try:
                self._next_run[entry.pk] = entry.next_run(tz)
            except (TypeError, ValueError) as exc:
                logger.error("beat: Skipping %s, its schedule is invalid: %s", entry.name, exc)
                continue
            self._entries[entry.pk] = entry
        logger.debug("beat: Loaded %d periodic task(s).", len(self._entries))

    def _send(self, entry: PeriodicTask, now: datetime.datetime) -> None:
        tz = self.app.conf.timezone
        scheduled = entry.schedule.latest(self._next_run[entry.pk], now, tz)
        task_id = str(uuid.uuid4())
        try:
            with transaction.atomic(using=self.using):
                self._record(entry, scheduled, task_id)
                self.app.send_task(
                    entry.task, entry.args, entry.kwargs, queue=entry.queue or None,
                    priority=entry.priority, expires=entry.expires, task_id=task_id,
                    _task=self.app.tasks.get(entry.task),
                )
        except (IntegrityError, _Superseded):
            logger.info("beat: %s at %s was already sent, or the entry changed; reloading.",
                        entry.name, scheduled.isoformat())
            self._version = None
            return
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the others
            logger.error("Message Error: Couldn't apply scheduled task %s: %r (held until the "
                         "periodic tasks change)", entry.name, exc)
            del self._entries[entry.pk], self._next_run[entry.pk]
            return
        logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        entry.last_run_at, entry.total_run_count = scheduled, entry.total_run_count + 1
        if entry.one_off:
            del self._entries[entry.pk], self._next_run[entry.pk]
        else:
            self._next_run[entry.pk] = entry.next_run(tz)

    def _record(self, entry: PeriodicTask, scheduled: datetime.datetime, task_id: str) -> None:
        """Advance the entry (forward only, only while enabled) and insert the run's key."""
        changes: dict[str, Any] = {"last_run_at": scheduled}
        if entry.one_off:
            changes["enabled"] = False
        updated = (
            PeriodicTask.objects.using(self.using)
            .filter(Q(last_run_at__isnull=True) | Q(last_run_at__lt=scheduled),
                    pk=entry.pk, enabled=True)
            .update(total_run_count=F("total_run_count") + 1, **changes)
        )
        if not updated:
            raise _Superseded
        PeriodicTaskRun.objects.using(self.using).create(
            periodic_task_id=entry.pk, scheduled_at=scheduled, task_id=task_id
        )

    # Running.

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler or another thread)."""
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:
            pass

    def run(self, parent_pid: int | None = None) -> None:
        """Tick until SIGINT, SIGTERM or SIGQUIT (or, embedded, until the parent is gone)."""
        previous = {
            sig: signal.signal(sig, lambda signum, frame: self.stop())
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
        }
        logger.info("beat: Starting...")
        signals.beat_init.send(sender=self)
        try:
            while not self._stop:
                try:
                    delay = self.tick()
                except (OperationalError, InterfaceError) as exc:
                    logger.error("beat: Database error: %s; retrying in %.1fs",
                                 str(exc).strip(), self.max_interval)
                    connections[self.using].close()
                    delay = self.max_interval
                if parent_pid is not None and os.getppid() != parent_pid:
                    logger.warning("beat: The worker is gone; stopping.")
                    break
                select.select([self._wake_r], [], [], delay)
        finally:
            try:
                self.release()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        logger.info("beat: Stopped.")


def _run_embedded(app: App, parent_pid: int) -> None:
    beat = Beat(app)
    signals.beat_embedded_init.send(sender=beat)  # then beat_init, as Celery sends them
    beat.run(parent_pid=parent_pid)


def start_embedded(app: App) -> multiprocessing.process.BaseProcess:
    """Start beat in a child process of the worker (``celery worker -B``)."""
    connections.close_all()  # the child must open its own connection
    process = multiprocessing.get_context("fork").Process(
        target=_run_embedded, args=(app, os.getpid()), name="Beat", daemon=False
    )
    process.start()
    return process


def stop_embedded(process: multiprocessing.process.BaseProcess, timeout: float = 10.0) -> None:
    """Stop the embedded beat (it releases its lease) and wait for it."""
    if process.is_alive():
        os.kill(process.pid, signal.SIGTERM)
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
