"""The worker's side of a task's life cycle (:mod:`djqueue.client.hooks` has the handlers): the
request a call runs with, read from its message, what ``Reject`` and ``Ignore`` do to it, and
the log line of an expected failure (``throws``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import states
from ..client.hooks import log_predicate, shown_name
from ..exceptions import Ignore, Reject
from .workflow import REQUEST_FIELDS  # the canvas's fields, top-level keys of a body

logger = logging.getLogger("djqueue.worker")

if TYPE_CHECKING:
    from ..client.task import Task
    from .execution import Outcome


def push_request(task: Task, outcome: Outcome, payload: dict[str, Any],
                 headers: dict[str, Any] | None, args: list[Any], kwargs: dict[str, Any]) -> bool:
    """Push ``task.request`` for the outcome's job: the ``headers`` and workflow fields of its
    body, then its row's fields. Gives the outcome the call's ``shadow`` name; returns whether
    the call asked not to store its value (``apply_async(ignore_result=True)``)."""
    job = outcome.job
    if len(payload) > 2:  # more than args and kwargs
        workflow = {name: payload[name] for name in REQUEST_FIELDS if name in payload}
        if workflow:
            headers = {**headers, **workflow} if headers else workflow
    task.push_request(
        headers, id=job.task_id, args=args, kwargs=kwargs, retries=job.retries,
        hostname=job.hostname, eta=payload.get("eta"), expires=payload.get("expires"),
        delivery_info={"routing_key": job.queue, "priority": job.priority,
                       "redelivered": job.deliveries > 1},
        timelimit=(job.time_limit, job.soft_time_limit), correlation_id=job.task_id,
    )
    if not headers:
        return False
    request = task.request
    outcome.shadow = request.shadow
    return bool(request.ignore_result)


def predicate(task: Task, outcome: Outcome, exc: Reject | Ignore,
              failed: Callable[[Outcome, BaseException, str], None], serializer: str) -> None:
    """Settle a call that raised ``Ignore`` (acknowledged, nothing stored) or ``Reject``: back to
    the queue with ``acks_late`` and ``requeue``; otherwise FAILURE with the ``Reject``, its
    message set aside (``acks_late``: the dead letter) or acknowledged (it was at the start, as
    in Celery). Logged here, in the pool process, with Celery's lines."""
    job = outcome.job
    log_predicate(task, job.task_id, exc)
    outcome.logged = True
    if isinstance(exc, Ignore):
        outcome.state, outcome.store = states.IGNORED, False
    elif job.acks_late and exc.requeue:
        outcome.state, outcome.action, outcome.store = states.REJECTED, "requeue", False
    else:
        failed(outcome, exc, serializer)
        outcome.action = "reject" if job.acks_late else "ack"


def expected(task: Task, outcome: Outcome, exc: BaseException) -> BaseException:
    """A failure with one of the task's ``throws`` is logged here at INFO, without the
    traceback (stored all the same), as Celery's ``raised expected``; returns ``exc``."""
    if task.throws and isinstance(exc, task.throws):
        logger.info("Task %s[%s] raised expected: %r", shown_name(task), outcome.job.task_id, exc)
        outcome.logged = True
    return exc
