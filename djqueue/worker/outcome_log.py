"""The worker's log line for each settled outcome, in Celery's words ("Task tasks.add[<id>]
succeeded in 0.0004s: 8"), written by the worker's main process when the outcome comes back from
its pool."""

from __future__ import annotations

import logging

from .. import states
from .execution import Outcome

logger = logging.getLogger("djqueue.worker")


def log_outcome(outcome: Outcome) -> None:
    """Log an outcome the way Celery's worker does ("Task tasks.add[id] succeeded in 0.0004s: 8")."""
    job = outcome.job
    name, task_id = outcome.shadow or job.shown_name or job.task_name, job.task_id
    if outcome.logged:
        return
    extra = {"djqueue_task": outcome.job}  # the task's fields, for the JSON log format
    if outcome.state == states.SUCCESS:
        logger.info("Task %s[%s] succeeded in %.4fs: %s", name, task_id, outcome.runtime,
                    outcome.result_repr, extra=extra)
    elif outcome.action == "retry":
        logger.info("Task %s[%s] retry: Retry at %s: %s", name, task_id,
                    outcome.retry_at.isoformat() if outcome.retry_at else "?",
                    outcome.result_repr, extra=extra)
    elif outcome.action == "release":
        logger.warning("Task %s[%s] returned to the queue: its pool process stopped before it "
                       "began.", name, task_id, extra=extra)
    elif outcome.action == "requeue":
        logger.warning("Task %s[%s] was cut short (%s); acks_late: returned to the queue.",
                       name, task_id, outcome.result_repr, extra=extra)
    elif outcome.state == states.REVOKED:
        logger.warning("Task %s[%s] revoked: %s", name, task_id, outcome.result_repr, extra=extra)
    elif outcome.state == states.IGNORED:
        logger.info("Task %s[%s] ignored", name, task_id, extra=extra)
    elif outcome.traceback:
        logger.error("Task %s[%s] raised unexpected: %s\n%s", name, task_id,
                     outcome.result_repr, outcome.traceback.rstrip(), extra=extra)
    elif outcome.action == "reject":
        logger.error("Task %s[%s] set aside (state 'rejected'), not run: %s", name, task_id,
                     outcome.result_repr, extra=extra)
    else:
        logger.error("Task handler raised error: %s (task %s[%s])", outcome.result_repr,
                     name, task_id, extra=extra)
