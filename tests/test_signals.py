"""Celery's signals in-process: their arguments when a task is applied eagerly, published and run
by the worker's loop (solo pool), the logging helpers (``get_task_logger``, the JSON format) and
the OpenTelemetry integration, against the real database."""

from __future__ import annotations

import json
import logging
import traceback
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from djqueue import signals, states
from djqueue.canvas import group
from djqueue.cli.logs import configure_logging
from djqueue.client.base import app
from djqueue.client.tracing import ExceptionInfo, Trace
from djqueue.contrib import opentelemetry as djqueue_otel
from djqueue.models import Message
from djqueue.utils.log import JsonFormatter, TaskFormatter, get_task_logger
from djqueue.worker.loop import Worker
from example_project.demo.tasks import DemoError, fail
from tasks import add
from tests import fault_tasks

Calls = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def heard() -> Iterator[Callable[..., Calls]]:
    """``heard(signal, ...)`` connects a recorder to each signal; all are disconnected at the
    end. The recorder keeps (signal name, arguments), and the request id as the receiver saw it
    (``sender.request`` must still be the call's in the task's own signals)."""
    connected: list[tuple[signals.Signal, Callable[..., None]]] = []
    calls: Calls = []

    def listen(*wanted: signals.Signal) -> Calls:
        for signal in wanted:
            def receiver(sender: Any = None, _name: str = signal.name, **kwargs: Any) -> None:
                kwargs.pop("signal")
                request = getattr(sender, "request", None)
                calls.append((_name, {"sender": sender, "request_id": getattr(request, "id", None),
                                      **kwargs}))
            signal.connect(receiver)
            connected.append((signal, receiver))
        return calls

    yield listen
    for signal, receiver in connected:
        signal.disconnect(receiver)


@pytest.fixture
def worker() -> Worker:
    w = Worker(app, pool="solo", poll_interval=0, hostname="signals@test")
    w.start()
    return w


def drain(worker: Worker, rounds: int = 6) -> None:
    for _ in range(rounds):
        worker.loop()


def by_name(calls: Calls, name: str) -> list[dict[str, Any]]:
    return [kwargs for signal, kwargs in calls if signal == name]


RUN_SIGNALS = (signals.task_prerun, signals.task_postrun, signals.task_success,
               signals.task_failure, signals.task_retry)


# The signal class.


def test_connect_works_as_celery_documents_it_and_a_failing_receiver_stops_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signal = signals.Signal("example", ["value"])
    seen = []

    @signal.connect
    def bare(sender: Any, value: int, **kwargs: Any) -> str:
        seen.append(("bare", sender, value))
        raise ValueError("receiver bug")

    @signal.connect(sender="tasks.add")
    def filtered(sender: Any, value: int, **kwargs: Any) -> str:
        seen.append(("filtered", sender, value))
        return "ok"

    assert isinstance(bare, types.FunctionType) and isinstance(filtered, types.FunctionType)
    responses = signal.send(sender="tasks.add", value=1)
    signal.send(sender="tasks.other", value=2)
    assert seen == [("bare", "tasks.add", 1), ("filtered", "tasks.add", 1), ("bare", "tasks.other", 2)]
    assert isinstance(responses[0][1], ValueError) and responses[1][1] == "ok"
    assert "Signal handler" in caplog.text and "receiver bug" in caplog.text
    assert signal.name == "example" and "value" in signal.providing_args


def test_nothing_is_built_without_a_receiver() -> None:
    assert not any(signal.receivers for signal in RUN_SIGNALS) and not signals.run_connected
    assert Trace.begin(add, "some-id", [1, 2], {}) is None


# Task signals of eager calls (Task.apply), in this process.


def test_apply_sends_prerun_success_and_postrun_with_the_request_pushed(heard) -> None:
    calls = heard(*RUN_SIGNALS)
    result = add.apply((2, 2))
    assert [name for name, _ in calls] == ["task_prerun", "task_success", "task_postrun"]
    prerun, success, postrun = (kwargs for _, kwargs in calls)
    assert prerun == {"sender": add, "request_id": result.id, "task_id": result.id, "task": add,
                      "args": [2, 2], "kwargs": {}}
    assert success["sender"] is add and success["result"] == 4 and success["runtime"] >= 0
    assert success["request_id"] == result.id
    assert postrun == {**prerun, "retval": 4, "state": states.SUCCESS}


def test_apply_of_a_failing_task_sends_failure_with_the_exception_and_its_traceback(heard) -> None:
    calls = heard(*RUN_SIGNALS)
    result = fail.apply(("boom",))
    assert [name for name, _ in calls] == ["task_prerun", "task_failure", "task_postrun"]
    failure, postrun = by_name(calls, "task_failure")[0], by_name(calls, "task_postrun")[0]
    assert isinstance(failure["exception"], DemoError) and failure["task_id"] == result.id
    assert (failure["args"], failure["kwargs"]) == (["boom"], {})
    assert isinstance(failure["traceback"], types.TracebackType)
    assert "DemoError: boom" in str(failure["einfo"])
    assert failure["einfo"].exception is failure["exception"]
    assert postrun["state"] == states.FAILURE and postrun["retval"] is failure["exception"]


def test_apply_of_a_retrying_task_sends_retry_then_success(heard, record_file) -> None:
    calls = heard(*RUN_SIGNALS)
    result = fault_tasks.flaky.apply(("k", 1))
    assert result.get() == 1
    assert [name for name, _ in calls] == [
        "task_prerun", "task_retry", "task_postrun", "task_prerun", "task_success", "task_postrun"]
    retry = by_name(calls, "task_retry")[0]
    assert retry["request"].id == result.id and retry["request"].retries == 0
    assert "attempt 0" in str(retry["reason"]) and "Flaky" in str(retry["einfo"])
    assert by_name(calls, "task_postrun")[0]["state"] == states.RETRY


# Publishing.


@pytest.mark.django_db(transaction=True)
def test_publishing_signals_carry_celerys_arguments_and_headers_travel_with_the_message(heard):
    written_when_announced = []

    def add_header(headers: dict[str, Any], **kwargs: Any) -> None:
        headers["x-trace"] = f"for-{headers['id']}"

    def check_written(headers: dict[str, Any], **kwargs: Any) -> None:
        written_when_announced.append(Message.objects.filter(task_id=headers["id"]).exists())

    signals.before_task_publish.connect(add_header)
    signals.after_task_publish.connect(check_written)
    calls = heard(signals.before_task_publish, signals.after_task_publish)
    try:
        result = add.apply_async((1, 2), queue="other", priority=3)
    finally:
        signals.before_task_publish.disconnect(add_header)
        signals.after_task_publish.disconnect(check_written)
    before, after = by_name(calls, "before_task_publish")[0], by_name(calls, "after_task_publish")[0]
    assert before["sender"] == "tasks.add" and before["routing_key"] == "other"
    assert before["headers"]["id"] == result.id and before["headers"]["task"] == "tasks.add"
    assert before["body"][:2] == ([1, 2], {}) and before["properties"]["priority"] == 3
    assert set(before) >= {"exchange", "declare", "retry_policy"}
    assert after["sender"] == "tasks.add" and after["routing_key"] == "other"
    assert after["headers"]["x-trace"] == f"for-{result.id}" and after["body"][:2] == ([1, 2], {})
    assert written_when_announced == [True]
    body = json.loads(Message.objects.get(task_id=result.id).body)
    assert body["headers"] == {"x-trace": f"for-{result.id}"}


@pytest.mark.django_db(transaction=True)
def test_every_member_of_a_group_is_announced(heard) -> None:
    calls = heard(signals.before_task_publish, signals.after_task_publish)
    result = group(add.s(i, i) for i in range(3)).apply_async()
    ids = [r.id for r in result.results]
    assert [c["headers"]["id"] for c in by_name(calls, "before_task_publish")] == ids
    assert [c["headers"]["id"] for c in by_name(calls, "after_task_publish")] == ids


# The worker's loop: main-process and pool-process signals (solo: one process).


@pytest.mark.django_db(transaction=True)
def test_the_worker_sends_received_then_the_run_signals_with_the_headers(heard, worker) -> None:
    calls = heard(signals.task_received, *RUN_SIGNALS)

    def add_header(headers: dict[str, Any], **kwargs: Any) -> None:
        headers["x-tenant"] = "blue"

    seen_headers = []

    def read_headers(task: Any, **kwargs: Any) -> None:
        seen_headers.append(task.request.headers)

    signals.before_task_publish.connect(add_header)
    signals.task_prerun.connect(read_headers)
    try:
        ok, bad = add.delay(3, 4), fail.delay("no")
        drain(worker)
    finally:
        signals.before_task_publish.disconnect(add_header)
        signals.task_prerun.disconnect(read_headers)
    assert ok.get(timeout=1) == 7
    received = by_name(calls, "task_received")
    assert [c["request"].id for c in received] == [ok.id, bad.id]
    request = received[0]["request"]
    assert received[0]["sender"] is worker and request.name == "tasks.add"
    assert (request.args, request.kwargs, request.hostname) == ([3, 4], {}, "signals@test")
    assert request.delivery_info["routing_key"] == "celery" and request.headers == {"x-tenant": "blue"}
    assert seen_headers == [{"x-tenant": "blue"}, {"x-tenant": "blue"}]
    assert by_name(calls, "task_success")[0]["result"] == 7
    failure = by_name(calls, "task_failure")[0]
    assert failure["task_id"] == bad.id and isinstance(failure["exception"], DemoError)
    assert [c["state"] for c in by_name(calls, "task_postrun")] == [states.SUCCESS, states.FAILURE]


@pytest.mark.django_db(transaction=True)
def test_revoked_expired_and_unknown_messages_are_announced(heard, worker) -> None:
    calls = heard(signals.task_revoked, signals.task_unknown, signals.task_received,
                  signals.task_prerun)
    revoked = add.delay(1, 1)
    revoked.revoke()
    expired = add.apply_async((1, 1), expires=-1)
    unknown = app.send_task("nowhere.nothing", (1,))
    drain(worker)
    assert by_name(calls, "task_received") == [] and by_name(calls, "task_prerun") == []
    by_id = {c["request"].id: c for c in by_name(calls, "task_revoked")}
    assert by_id[revoked.id]["sender"] is add and by_id[revoked.id]["expired"] is False
    assert by_id[expired.id]["expired"] is True and by_id[expired.id]["terminated"] is False
    (unknown_call,) = by_name(calls, "task_unknown")
    assert unknown_call["sender"] is worker and unknown_call["name"] == "nowhere.nothing"
    assert unknown_call["id"] == unknown.id and unknown_call["message"].task_id == unknown.id


@pytest.mark.django_db(transaction=True)
def test_worker_set_up_signals_name_the_node(heard) -> None:
    calls = heard(signals.celeryd_init, signals.celeryd_after_setup, signals.worker_init,
                  signals.worker_process_init)
    w = Worker(app, pool="solo", poll_interval=0, hostname="setup@test", concurrency=3)
    w.start()
    assert [name for name, _ in calls] == [
        "celeryd_init", "celeryd_after_setup", "worker_init", "worker_process_init"]
    init = by_name(calls, "celeryd_init")[0]
    assert init["sender"] == "setup@test" and init["instance"] is w and init["conf"] is app.conf
    assert init["options"]["concurrency"] == 3
    assert by_name(calls, "celeryd_after_setup")[0]["instance"].queues == ["celery"]


# Logging.


@pytest.fixture
def tracking() -> Iterator[None]:
    """get_task_logger connects receivers that follow the running task: gone afterwards."""
    yield
    for signal in (signals.task_prerun, signals.task_postrun, signals.celeryd_init):
        signal.disconnect(dispatch_uid="djqueue.utils.log")


def test_get_task_logger_lines_name_the_running_task(tracking: None) -> None:
    with pytest.raises(RuntimeError):
        get_task_logger("djqueue.task")
    logger = get_task_logger("tests.observed")
    assert logger.parent is logging.getLogger("djqueue.task")
    lines: list[str] = []

    @app.task(name="tests.test_signals.logs_a_line")
    def logs_a_line() -> None:
        record = logging.LogRecord("tests.observed", logging.INFO, __file__, 1, "hello", (), None)
        lines.append(TaskFormatter().format(record))
        lines.append(JsonFormatter().format(record))

    try:
        result = logs_a_line.apply()
    finally:
        app._tasks.pop("tests.test_signals.logs_a_line")
    assert lines[0].endswith(f"tests.test_signals.logs_a_line[{result.id}]: hello")
    line = json.loads(lines[1])
    assert line["message"] == "hello" and line["level"] == "INFO"
    assert (line["task_id"], line["task_name"], line["retries"]) == (
        result.id, "tests.test_signals.logs_a_line", 0)
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "bye", (), None)
    assert "???[???]: bye" in TaskFormatter().format(outside)
    assert "task_id" not in json.loads(JsonFormatter().format(outside))


# OpenTelemetry, producer and consumer in this process.


@pytest.mark.django_db(transaction=True)
def test_opentelemetry_spans_one_trace_from_the_sender_to_the_task(worker) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    djqueue_otel.instrument(tracer_provider=provider)
    try:
        with provider.get_tracer("test").start_as_current_span("web request") as web:
            ok = add.delay(5, 5)
            bad = fail.delay("traced")
        assert "traceparent" in json.loads(Message.objects.get(task_id=ok.id).body)["headers"]
        drain(worker)
    finally:
        djqueue_otel.uninstrument()
    assert ok.get(timeout=1) == 10
    spans = {span.name: span for span in exporter.get_finished_spans()}
    trace_id = web.get_span_context().trace_id
    producer, consumer = spans["apply_async/tasks.add"], spans["run/tasks.add"]
    assert producer.kind == trace.SpanKind.PRODUCER and consumer.kind == trace.SpanKind.CONSUMER
    assert producer.context.trace_id == consumer.context.trace_id == trace_id
    assert producer.parent.span_id == web.get_span_context().span_id
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes["messaging.message.id"] == ok.id
    assert consumer.attributes["djqueue.state"] == states.SUCCESS
    failed = spans["run/example_project.demo.tasks.fail"]
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert failed.events[0].name == "exception" and failed.context.trace_id == trace_id
    assert not any(signal.receivers for signal in RUN_SIGNALS)  # uninstrumented
    assert not signals.run_connected


def test_einfo_formats_like_a_traceback() -> None:
    try:
        raise DemoError("x")
    except DemoError as exc:
        einfo = ExceptionInfo(exc)
    assert str(einfo) == "".join(traceback.format_exception(einfo.exception))
    assert einfo.type is DemoError and einfo.tb is einfo.exception.__traceback__


def test_a_setup_logging_receiver_takes_the_set_up_over(heard, tmp_path) -> None:
    calls = heard(signals.after_setup_logger, signals.after_setup_task_logger)
    root, task_logger = logging.getLogger(), logging.getLogger("djqueue.task")
    handlers = (list(root.handlers), list(task_logger.handlers))

    def own_logging(**kwargs: Any) -> str:
        return "configured"

    signals.setup_logging.connect(own_logging)
    try:
        configure_logging("INFO", str(tmp_path / "worker.log"))
    finally:
        signals.setup_logging.disconnect(own_logging)
    assert (list(root.handlers), list(task_logger.handlers)) == handlers and calls == []
