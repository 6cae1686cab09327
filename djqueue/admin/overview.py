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
#: Seconds between the page's refreshes.
REFRESH_SECONDS = 10


def overview_context() -> dict[str, Any]:
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
        "refresh_seconds": REFRESH_SECONDS,
        "as_of": timezone.localtime(),
    }
