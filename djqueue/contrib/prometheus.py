"""Prometheus metrics of the queue, built on ``prometheus_client`` (``pip install djqueue[prometheus]``).

Mount the view in the project's URLs::

    from djqueue.contrib.prometheus import metrics_view
    urlpatterns = [..., path("metrics", metrics_view)]

or write a file for node-exporter's textfile collector: ``manage.py celery metrics --textfile
/var/lib/node_exporter/djqueue.prom``. Every figure comes from the database, so one scrape covers
every worker on every host:

- ``djqueue_queue_length{queue,state}``: messages waiting, scheduled, reserved, running and set
  aside (``rejected``). Counts stop at 10,001 (``broker.monitor.COUNT_CAP`` + 1), as the admin's
  do, so a scrape stays cheap on a table of millions;
- ``djqueue_queue_oldest_waiting_seconds{queue}``, ``djqueue_queue_consumers{queue}``,
  ``djqueue_workers_alive``;
- ``djqueue_task_{succeeded,failed,retried,revoked}_total{name,queue}`` and the histogram
  ``djqueue_task_runtime_seconds{name,queue}``, from the statistics workers write with their
  heartbeat (:mod:`djqueue.stats`): up to one heartbeat late.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)
from prometheus_client.utils import floatToGoString

from .. import states
from ..broker import monitor
from ..client.base import app
from ..stats import read
from ..stats.models import RUNTIME_BUCKETS

#: Task states counted, and the word of their counter (``djqueue_task_<word>_total``).
COUNTERS = {states.SUCCESS: "succeeded", states.FAILURE: "failed", states.RETRY: "retried",
            states.REVOKED: "revoked"}
QUEUE_STATES = ("waiting", "scheduled", "reserved", "running", "rejected")


class QueueCollector:
    """A ``prometheus_client`` collector reading the broker's database at each scrape."""

    def __init__(self, using: str | None = None) -> None:
        self.using = using

    def describe(self) -> list[Metric]:
        return []  # nothing read at registration: the database is read at scrape time only

    def collect(self) -> Iterator[Metric]:
        conf = app.conf
        using = self.using or conf.broker_alias
        lost_after = float(conf.DJQUEUE_WORKER_LOST_TIMEOUT)
        yield from self._queues(monitor.queue_figures(using, lost_after, conf.CELERY_DEFAULT_QUEUE))
        alive = GaugeMetricFamily("djqueue_workers_alive",
                                  "Worker processes whose heartbeat is recent.")
        alive.add_metric([], len(monitor.live_workers(using, lost_after)))
        yield alive
        yield from self._tasks(read.task_totals(using))

    def _queues(self, figures: list[monitor.QueueFigures]) -> Iterator[Metric]:
        length = GaugeMetricFamily(
            "djqueue_queue_length", "Messages in the queue by state (counts stop at "
            f"{monitor.COUNT_CAP + 1}).", labels=["queue", "state"])
        oldest = GaugeMetricFamily("djqueue_queue_oldest_waiting_seconds",
                                   "How long the oldest waiting message has been ready to run.",
                                   labels=["queue"])
        consumers = GaugeMetricFamily("djqueue_queue_consumers",
                                      "Live worker nodes consuming the queue.", labels=["queue"])
        for queue in figures:
            for state, count in zip(QUEUE_STATES, queue.counts):
                length.add_metric([queue.name, state], count)
            waited = queue.oldest_waiting
            oldest.add_metric([queue.name], max(waited.total_seconds(), 0.0) if waited else 0.0)
            consumers.add_metric([queue.name], len(queue.workers))
        yield from (length, oldest, consumers)

    def _tasks(self, totals: list[read.TaskTotals]) -> Iterator[Metric]:
        counters = {state: CounterMetricFamily(f"djqueue_task_{word}",
                                               f"Tasks {word}, by task name and queue.",
                                               labels=["name", "queue"])
                    for state, word in COUNTERS.items()}
        runtime = HistogramMetricFamily("djqueue_task_runtime_seconds",
                                        "Runtime of tasks that ran (succeeded, failed, retried).",
                                        labels=["name", "queue"])
        ran: dict[tuple[str, str], tuple[list[int], float]] = {}
        for row in totals:
            if row.state in counters:
                counters[row.state].add_metric([row.task_name, row.queue], row.count)
            if row.state in read.RAN:
                buckets, seconds = ran.get((row.task_name, row.queue), ([0] * len(row.buckets), 0.0))
                ran[row.task_name, row.queue] = (
                    [a + b for a, b in zip(buckets, row.buckets)], seconds + row.runtime_sum)
        for labels, (buckets, seconds) in ran.items():
            cumulative, running = [], 0
            for bound, count in zip((*RUNTIME_BUCKETS, float("inf")), buckets):
                running += count
                cumulative.append((floatToGoString(bound), running))
            runtime.add_metric(list(labels), cumulative, seconds)
        yield from counters.values()
        yield runtime


def registry(using: str | None = None) -> CollectorRegistry:
    """A registry holding only djqueue's collector (not the web process's own metrics)."""
    metrics = CollectorRegistry()
    metrics.register(QueueCollector(using))
    return metrics


def exposition(using: str | None = None) -> bytes:
    """The metrics in Prometheus's text format."""
    return generate_latest(registry(using))


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics for a Prometheus scrape. It requires nothing: protect it as the project's
    other internal endpoints (a network rule, a proxy, or a wrapping view)."""
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


#: ``path("", include("djqueue.contrib.prometheus"))`` serves ``/metrics``.
urlpatterns = [path("metrics", metrics_view, name="djqueue_metrics")]
