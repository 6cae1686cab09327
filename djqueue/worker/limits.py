"""Flow control as a worker sees it: which tasks are gated across the cluster, and paused queues.

A task is *gated* when its starts are limited for the whole cluster: a rate limit whose scope is
``"cluster"`` (the task's ``rate_limit_scope``, else ``DJQUEUE_RATE_LIMIT_SCOPE``), or a
``concurrency_limit``. The claim never starts a gated task's messages itself; the worker's round
asks the database which it may start (:mod:`djqueue.broker.flow`). A rate limit of scope
``"worker"`` (Celery's meaning, the default) stays with the worker's own token buckets
(:mod:`djqueue.worker.throttle`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..broker.flow import Gate
from ..client.rates import parse_rate
from ..exceptions import ImproperlyConfigured, InvalidRateLimit

if TYPE_CHECKING:
    from ..client.base import App
    from ..client.task import Task

logger = logging.getLogger("djqueue.ratelimit")

#: The scopes of a rate limit: each worker's own (Celery's), or all workers together.
SCOPES = ("worker", "cluster")


def scope_of(task: Task) -> object:
    return task.resolved("rate_limit_scope", "DJQUEUE_RATE_LIMIT_SCOPE")


def split(task: Task, rate: object) -> tuple[object, Gate | None]:
    """``(the rate the worker's own buckets enforce, the cluster's gate)`` for ``task`` whose rate
    limit in force is ``rate`` (None: none)."""
    concurrency = task.concurrency_limit or None
    cluster_rate = None
    if rate is not None and scope_of(task) == "cluster":
        try:
            cluster_rate = parse_rate(rate) or None
        except InvalidRateLimit:
            return rate, None  # the throttle logs it once and runs the task without a limit
        rate = None
    if cluster_rate is None and concurrency is None:
        return rate, None
    return rate, Gate(task.name, cluster_rate, concurrency)


def validate(app: App) -> None:
    """Raise :class:`ImproperlyConfigured` for the first task whose scope or concurrency limit is
    not one a worker can enforce (the system checks report the setting)."""
    for name in list(app.tasks):
        task = app.tasks[name]
        if scope_of(task) not in SCOPES:
            raise ImproperlyConfigured(f"Task {name!r}: rate_limit_scope must be one of "
                                       f"{', '.join(SCOPES)}, not {scope_of(task)!r}")
        limit = task.concurrency_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ImproperlyConfigured(f"Task {name!r}: concurrency_limit must be a whole number "
                                       f"of at least 1 (or None), not {limit!r}")
