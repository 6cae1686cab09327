"""What the overview page shows: per-queue figures, the last hour's chart per queue, recent
outcomes and live workers. The page refreshes itself (``static/djqueue/overview.js``)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from ..broker import monitor
from ..client.base import app
from ..stats import read
from .chart import minute_chart

OUTCOME_WINDOWS = (5, 60)  # minutes shown in the table of finished tasks
CHART_MINUTES = 60
#: Seconds between the page's refreshes (``?refresh=N`` on the page's address: 0 turns it off).
REFRESH_SECONDS = 10
MAX_REFRESH_SECONDS = 3600


def refresh_seconds(asked: str | None) -> int:
    """The refresh interval ``?refresh=`` asks for, if it is a whole number of seconds from 0 to
    an hour; else the default."""
    if asked is not None and asked.isdigit() and int(asked) <= MAX_REFRESH_SECONDS:
        return int(asked)
    return REFRESH_SECONDS


def overview_context(refresh: str | None = None) -> dict[str, Any]:
    using, conf = app.conf.broker_alias, app.conf
    lost_after = float(conf.DJQUEUE_WORKER_LOST_TIMEOUT)
    first, series = read.minute_series(using, CHART_MINUTES)
    return {
        "queues": monitor.queue_figures(using, lost_after, conf.CELERY_DEFAULT_QUEUE),
        "count_cap": monitor.COUNT_CAP,
        "charts": [(line, minute_chart(first, line)) for line in series],
        "chart_minutes": CHART_MINUTES,
        "outcomes": [(minutes, monitor.recent_outcomes(using, minutes))
                     for minutes in OUTCOME_WINDOWS],
        "workers": monitor.live_workers(using, lost_after),
        "refresh_seconds": refresh_seconds(refresh),
        "as_of": timezone.localtime(),
    }
