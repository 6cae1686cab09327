"""Receivers for every signal a worker sends, for the observability process test: each signal
appends a JSON line (its name, the process id, its plain arguments) to ``DJQUEUE_SIGNAL_FILE``.
OpenTelemetry is set up with the SDK's in-memory exporter and djqueue's instrumentation; after
each task the finished spans are appended to ``DJQUEUE_SPAN_FILE``."""

from __future__ import annotations

import json
import os
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from djqueue import signals
from djqueue.contrib import opentelemetry as djqueue_otel

#: Every signal but setup_logging, whose receiver would take the logging set-up over.
RECORDED = [name for name in signals.__all__ if name not in ("Signal", "setup_logging")]


def _append(path_variable: str, line: dict[str, Any]) -> None:
    with open(os.environ[path_variable], "a") as file:
        file.write(json.dumps(line) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return getattr(value, "id", None) or type(value).__name__


def _recorder(name: str):  # noqa: ANN202
    def record(sender: Any = None, **kwargs: Any) -> None:
        kwargs.pop("signal")
        _append("DJQUEUE_SIGNAL_FILE", {
            "signal": name, "pid": os.getpid(), "sender": _plain(getattr(sender, "name", sender)),
            **{key: _plain(value) for key, value in kwargs.items()}})
    return record


_receivers = [_recorder(name) for name in RECORDED]
for _name, _receiver in zip(RECORDED, _receivers):
    getattr(signals, _name).connect(_receiver)

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
djqueue_otel.instrument(tracer_provider=provider)


@signals.task_postrun.connect  # after the instrumentation's, which ends the task's span
def _write_spans(**kwargs: Any) -> None:
    for span in exporter.get_finished_spans():
        _append("DJQUEUE_SPAN_FILE", {
            "name": span.name, "trace_id": span.context.trace_id,
            "span_id": span.context.span_id, "pid": os.getpid(),
            "parent_id": span.parent.span_id if span.parent else None})
    exporter.clear()
