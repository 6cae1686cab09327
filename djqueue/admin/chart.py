"""The overview's chart: succeeded and failed tasks per minute of one queue, as inline SVG.

Drawn on the server, so the page needs no script to show it and no file from elsewhere (the
machines running the admin may have no internet); the overview's small refresh script
(``static/djqueue/overview.js``) swaps in the new page's chart with the rest of it.
"""

from __future__ import annotations

import datetime

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from ..stats.read import QueueSeries

WIDTH, HEIGHT = 640, 150
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22
SUCCEEDED, FAILED = "#3f9b4f", "#ba2121"
#: Minutes between labels of the time axis.
LABEL_EVERY = 10


def _n(value: float) -> str:
    """A coordinate, to a tenth of a pixel (format_html escapes its arguments into text)."""
    return f"{value:.1f}"


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, … at least ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def minute_chart(first: datetime.datetime, series: QueueSeries) -> SafeString:
    """An SVG bar chart of ``series``, one bar per minute from ``first``, failures stacked on
    successes; hovering a bar shows its minute and counts."""
    minutes = len(series.succeeded)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_ceiling(max((s + f for s, f in zip(series.succeeded, series.failed)), default=0))
    slot = plot_w / max(minutes, 1)
    scale = plot_h / top
    base = TOP + plot_h
    parts = [format_html(
        '<svg class="djqueue-chart" viewBox="0 0 {} {}" width="100%" role="img" '
        'aria-label="{}: tasks succeeded and failed per minute, last {} minutes">',
        WIDTH, HEIGHT, series.queue, minutes)]
    for value in (0, top // 2, top) if top > 1 else (0, top):
        y = base - value * scale
        parts.append(format_html(
            '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" '
            'stroke-opacity="0.2"/><text x="{}" y="{}" text-anchor="end" font-size="11" '
            'fill="currentColor">{}</text>', LEFT, WIDTH - RIGHT, _n(y), _n(y), LEFT - 6, _n(y + 4), value))
    for index, (ok, failed) in enumerate(zip(series.succeeded, series.failed)):
        when = timezone.localtime(first + datetime.timedelta(minutes=index))
        x = LEFT + index * slot
        parts.append(format_html(
            '<g class="djqueue-minute"><title>{}: {} succeeded, {} failed</title>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="transparent"/>',
            when.strftime("%H:%M"), ok, failed, _n(x), TOP, _n(slot), plot_h))
        for count, below, colour, kind in ((ok, 0, SUCCEEDED, "succeeded"),
                                           (failed, ok, FAILED, "failed")):
            if count:
                parts.append(format_html(
                    '<rect class="djqueue-{}" x="{}" y="{}" width="{}" '
                    'height="{}" fill="{}"/>', kind, _n(x + 1), _n(base - (below + count) * scale),
                    _n(max(slot - 2, 1)), _n(count * scale), colour))
        parts.append(mark_safe("</g>"))
        if when.minute % LABEL_EVERY == 0:
            parts.append(format_html(
                '<text x="{}" y="{}" text-anchor="middle" font-size="11" '
                'fill="currentColor">{}</text>', _n(x + slot / 2), HEIGHT - 6, when.strftime("%H:%M")))
    parts.append(format_html(
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="0.5"/>'
        '</svg>', LEFT, WIDTH - RIGHT, base, base))
    return mark_safe("".join(parts))  # every part above was escaped by format_html
