"""A task that logs through ``get_task_logger``, for the observability process test (loaded by
workers through ``DJQUEUE_EXTRA_IMPORTS``)."""

from __future__ import annotations

from djqueue import task
from djqueue.utils.log import get_task_logger

logger = get_task_logger(__name__)


@task
def logged(key: str) -> str:
    logger.info("working on %s", key)
    return key
