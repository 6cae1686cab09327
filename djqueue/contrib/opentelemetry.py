"""OpenTelemetry tracing for djqueue tasks, built on djqueue's signals.

Enable it once per process, where the project sets up OpenTelemetry (the web process that sends
tasks, and the worker: ``celeryd_init`` or the settings module are good places)::

    from djqueue.contrib import opentelemetry as djqueue_otel
    djqueue_otel.instrument()                    # or instrument(tracer_provider=provider)

Then every task sent gets a ``PRODUCER`` span (``apply_async/<task name>``, a child of the span
current where it is sent), whose context travels in the message's headers (``traceparent``, …,
injected by the globally configured propagator, W3C Trace Context by default), and every run of
a task a ``CONSUMER`` span (``run/<task name>``) in the process that runs it, a child of the
producer's span: one trace from the request that sent the task to the task's own spans. A
failure records the exception and sets the span's status to ERROR; a retry adds an event.

Needs ``opentelemetry-api`` (and an SDK to export spans: ``opentelemetry-sdk``).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__, signals

_UID = "djqueue.contrib.opentelemetry"
#: Spans begun and not ended yet, by task id: producer spans (ended once the message is
#: written) and consumer spans with the context token to restore when the task ends.
_publishing: dict[str, trace.Span] = {}
_running: dict[str, tuple[trace.Span, object]] = {}
_tracer: trace.Tracer | None = None
#: Producer spans kept at most: a send whose write raised never gets its after_task_publish.
MAX_UNWRITTEN = 1000


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace tasks from now on, with ``tracer_provider`` (default: the global one)."""
    global _tracer
    _tracer = trace.get_tracer(_UID, __version__, tracer_provider=tracer_provider)
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, weak=False, dispatch_uid=_UID)


def uninstrument() -> None:
    """Stop tracing tasks (spans already begun are ended by their signals as usual)."""
    for signal, _ in _RECEIVERS:
        signal.disconnect(dispatch_uid=_UID)


def _before_publish(sender: str, headers: dict[str, Any], routing_key: str = "",
                    **_: Any) -> None:
    if _tracer is None:
        return
    task_id = str(headers.get("id"))
    span = _tracer.start_span(f"apply_async/{sender}", kind=SpanKind.PRODUCER, attributes={
        "messaging.system": "djqueue", "messaging.operation.type": "send",
        "messaging.destination.name": routing_key, "messaging.message.id": task_id,
        "djqueue.task_name": sender})
    propagate.inject(headers, context=trace.set_span_in_context(span))
    previous = _publishing.pop(task_id, None)  # the same id sent again before it was written
    if previous is not None:
        previous.end()
    if len(_publishing) >= MAX_UNWRITTEN:  # sends whose write raised: no after_task_publish
        _publishing.pop(next(iter(_publishing))).end()
    _publishing[task_id] = span


def _after_publish(headers: dict[str, Any], **_: Any) -> None:
    span = _publishing.pop(str(headers.get("id")), None)
    if span is not None:
        span.end()


def _prerun(task_id: str, task: Any, **_: Any) -> None:
    if _tracer is None:
        return
    parent = propagate.extract(task.request.headers or {})
    span = _tracer.start_span(f"run/{task.name}", context=parent, kind=SpanKind.CONSUMER,
                              attributes={
                                  "messaging.system": "djqueue",
                                  "messaging.operation.type": "process",
                                  "messaging.message.id": task_id,
                                  "djqueue.task_name": task.name,
                                  "djqueue.retries": task.request.retries or 0})
    token = otel_context.attach(trace.set_span_in_context(span))
    _running[task_id] = (span, token)


def _failure(task_id: str, exception: BaseException, **_: Any) -> None:
    found = _running.get(task_id)
    if found is not None:
        found[0].record_exception(exception)
        found[0].set_status(Status(StatusCode.ERROR, repr(exception)))


def _retry(request: Any, reason: Any = None, **_: Any) -> None:
    found = _running.get(request.id)
    if found is not None:
        found[0].add_event("retry", {"reason": str(reason)})


def _postrun(task_id: str, state: str | None = None, **_: Any) -> None:
    found = _running.pop(task_id, None)
    if found is None:
        return
    span, token = found
    span.set_attribute("djqueue.state", state or "")
    otel_context.detach(token)  # type: ignore[arg-type]
    span.end()


_RECEIVERS = (
    (signals.before_task_publish, _before_publish),
    (signals.after_task_publish, _after_publish),
    (signals.task_prerun, _prerun),
    (signals.task_failure, _failure),
    (signals.task_retry, _retry),
    (signals.task_postrun, _postrun),
)
