"""Remote-control handlers of flow control (part of :data:`djqueue.worker.control.HANDLERS`):
rate-limit overrides and paused queues, both stored rows every worker reads.

- ``rate_limit``: an override, stored (so workers started later apply it too) and applied here;
  ``0`` means no limit. Celery keeps a changed limit until the worker restarts; djqueue keeps it
  until ``reset_rate_limit`` removes it, because a cluster-wide limit must be the same on every
  worker, also those started later. Each worker logs the overrides it applies at its start.
- ``reset_rate_limit``: back to the configured limit (the task's, its annotation, the default).
- ``pause_queue``/``resume_queue``: the sender stored or removed the pause; each worker reads the
  paused queues again, and hands back what it reserved from a paused queue.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..client.control import normalize_rate, store_rate_limit
from ..client.rates import task_rate
from ..flow.store import paused_queues
from ..models import RateLimitOverride
from . import control_arguments as check
from .control_arguments import ControlError

if TYPE_CHECKING:
    from .loop import Worker

logger = logging.getLogger("djqueue.control")


def rate_limit(worker: Worker, task_name: str, rate_limit: str | float | None) -> dict[str, str]:
    check.task_name(worker.app.tasks, task_name)
    try:
        stored = normalize_rate(rate_limit)
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    store_rate_limit(task_name, stored, worker.using)  # first: if it fails, nothing changed
    worker.throttle.overrides[task_name] = stored
    logger.info("New rate limit for tasks of type %s: %s.", task_name,
                "none" if stored == "0" else stored)
    return {"ok": "rate limit disabled successfully" if stored == "0"
            else "new rate limit set successfully"}


def reset_rate_limit(worker: Worker, task_name: str) -> dict[str, str]:
    task = check.task_name(worker.app.tasks, task_name)
    RateLimitOverride.objects.using(worker.using).filter(task_name=task_name).delete()
    worker.throttle.overrides.pop(task_name, None)
    configured = task_rate(task) or "none"
    logger.info("Rate limit for tasks of type %s back to the configured one: %s.", task_name,
                configured)
    return {"ok": f"rate limit back to the configured one ({configured})"}


def pause_queue(worker: Worker, queue: str) -> dict[str, str]:
    queue = check.queue(queue)
    back = worker.pause(paused_queues(worker.using))
    logger.info("Queue %r paused; %d reserved message(s) handed back.", queue, back)
    return {"ok": f"queue {queue} paused" + (f" ({back} reserved handed back)" if back else "")}


def resume_queue(worker: Worker, queue: str) -> dict[str, str]:
    queue = check.queue(queue)
    worker.pause(paused_queues(worker.using))
    logger.info("Queue %r resumed.", queue)
    return {"ok": f"queue {queue} resumed"}


def load(worker: Worker) -> None:
    """At the worker's start: the overrides set at run time and the paused queues."""
    rows = RateLimitOverride.objects.using(worker.using).values_list("task_name", "rate_limit")
    for name, rate in rows:
        task = worker.app.tasks.get(name)
        if task is None:
            continue
        rate = rate or "0"  # rows of older versions wrote "" for "no limit"
        worker.throttle.overrides[name] = rate
        logger.warning("Rate limit of %s set at run time: %s (configured: %s); "
                       "'celery control reset_rate_limit %s' goes back to the configured one.",
                       name, "none" if rate == "0" else rate, task_rate(task) or "none", name)
    worker.pause(paused_queues(worker.using))
    if worker.paused:
        logger.warning("Paused queues (not claimed from): %s.", ", ".join(sorted(worker.paused)))
