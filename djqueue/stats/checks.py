"""System checks (``djqueue.E031``) for the monitoring settings: how long statistics and the rows
of stopped workers are kept."""

from __future__ import annotations

from typing import Any

from django.core import checks

from ..client.base import app

#: The admin's chart shows the last hour.
MIN_RETENTION = 3600


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


@checks.register("djqueue")
def check_monitoring(**kwargs: Any) -> list[checks.CheckMessage]:
    """E031: a retention of statistics shorter than the chart's hour, or a time after which
    stopped workers are forgotten that is not a number of seconds past the lost timeout."""
    conf, messages = app.conf, []
    retention = conf.DJQUEUE_STATS_RETENTION
    if not _seconds(retention) or not MIN_RETENTION <= retention < float("inf"):
        messages.append(checks.Error(
            f"DJQUEUE_STATS_RETENTION = {retention!r} is not a number of seconds of at least "
            f"{MIN_RETENTION}.",
            hint="Per-minute task statistics are kept this long (default 7200), then folded into "
                 "totals; the admin's chart shows the last hour of them.",
            id="djqueue.E031",
        ))
    forget = conf.DJQUEUE_WORKER_FORGET_AFTER
    lost = conf.DJQUEUE_WORKER_LOST_TIMEOUT
    if forget is not None and (not _seconds(forget) or not _seconds(lost) or forget < lost
                               or forget == float("inf")):
        messages.append(checks.Error(
            f"DJQUEUE_WORKER_FORGET_AFTER = {forget!r} is not a number of seconds of at least "
            f"DJQUEUE_WORKER_LOST_TIMEOUT ({lost!r}).",
            hint="A worker whose last heartbeat is older leaves the admin's Workers list "
                 "(default 3600); None keeps every worker row.",
            id="djqueue.E031",
        ))
    return messages
