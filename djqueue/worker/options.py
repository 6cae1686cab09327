"""The options of registered tasks as the worker needs them for each message it claims.

``acks_late``, ``track_started``, time limits and the rate limit come from the task, its
annotations and the settings; resolving them costs settings lookups and an annotation pass, more
than the rest of a short task's bookkeeping. The worker therefore reads them once per task name
per round (:meth:`TaskOptions.new_round`), so a change of settings or annotations reaches the next
round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..broker.rows import StartNow
from . import coroutines
from .execution import Job
from . import limits

if TYPE_CHECKING:
    from ..broker.flow import Gate
    from ..client.base import App
    from ..broker.rows import Claimed
    from .pools import Plan
    from .throttle import Throttle


@dataclass(slots=True)
class Options:
    acks_late: bool
    track_started: bool
    time_limit: float | None
    soft_time_limit: float | None
    rate: object  # the worker's own buckets enforce it
    gate: Gate | None  # the cluster's limits: the round admits or defers (djqueue.broker.flow)
    together: bool  # coroutines the prefork pool runs together, planned as a batch


class TaskOptions:
    def __init__(self, app: App, throttle: Throttle, time_limit: float | None,
                 soft_time_limit: float | None) -> None:
        self.app = app
        self.throttle = throttle
        self.time_limit = time_limit  # the worker's own (--time-limit, CELERYD_TASK_TIME_LIMIT)
        self.soft_time_limit = soft_time_limit
        self._round: dict[str, Options] | None = None  # None outside a round: read afresh
        self._seen: dict[str, None] = {}  # task names this worker has started, in order

    def new_round(self) -> None:
        self._round = {}

    def end_round(self) -> None:
        self._round = None

    def get(self, task_name: str) -> Options:
        cache = self._round if self._round is not None else {}
        options = cache.get(task_name)
        if options is None:
            task = self.app.tasks.get(task_name)

            def own(option: str, worker_value: float | None) -> float | None:
                value = getattr(task, option, None) if task else None
                return value if value is not None else worker_value

            rate, gate = self.throttle.rate(task_name), None
            if task is not None:
                rate, gate = limits.split(task, rate)
            options = cache[task_name] = Options(
                acks_late=bool(task.resolved("acks_late", "CELERY_ACKS_LATE")) if task else False,
                track_started=bool(task and task.resolved("track_started",
                                                          "CELERY_TRACK_STARTED")),
                time_limit=own("time_limit", self.time_limit),
                soft_time_limit=own("soft_time_limit", self.soft_time_limit),
                rate=rate,
                gate=gate,
                together=coroutines.concurrency(task) > 1,
            )
        return options

    def seen(self, task_name: str) -> None:
        """Note that this worker started a message of ``task_name``."""
        self._seen[task_name] = None

    def start_now(self, plan: Plan, short_names: list[str]) -> StartNow | None:
        """Which claimed messages the claim may mark started itself, since the pool takes them at
        once (up to its room after ``plan``): tasks this worker has started before (so their
        options are known), still registered, without a rate limit (the throttle must see them
        first) and not recording STARTED (that record is written with the start)."""
        idle, queued = plan.room()
        if not (idle or queued):
            return None
        names = [name for name in self._seen if name in self.app.tasks
                 and self.get(name).rate is None and self.get(name).gate is None
                 and not self.get(name).track_started and not self.get(name).together]
        known = set(names)
        return StartNow(idle, names, queued, [n for n in short_names if n in known],
                        [name for name in names if self.get(name).acks_late])

    def job_for(self, message: Claimed, hostname: str) -> Job:
        """What the pool needs to run ``message``: per-call limits win over the task's."""
        options = self.get(message.task_name)
        return Job(
            message.id, message.task_id, message.task_name, message.queue, message.priority,
            message.content_type, message.body, message.retries, hostname, options.acks_late,
            time_limit=(message.time_limit if message.time_limit is not None
                        else options.time_limit),
            soft_time_limit=(message.soft_time_limit if message.soft_time_limit is not None
                             else options.soft_time_limit),
            # The claim counted its own start; a reserved message's start is still to come.
            deliveries=message.deliveries if message.started else message.deliveries + 1,
            shown_name=message.shown_name or message.task_name,
        )
