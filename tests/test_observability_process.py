"""Observability against one real worker (prefork, ``-E``, JSON logs): each signal in the process
Celery sends it from, the JSON task lines, ``celery events --dump`` output, and one OpenTelemetry
trace from this process's span through the message to the span of the pool child that ran it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from djqueue.client.base import app
from djqueue.contrib import opentelemetry as djqueue_otel
from example_project.demo.tasks import DemoError, fail
from tests import fault_tasks
from tests.conftest import ROOT, wait_until


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_signals_events_json_logs_and_a_trace_across_a_real_worker(
    start_worker, worker_env: dict[str, str], tmp_path: Path,
) -> None:
    signal_file, span_file = tmp_path / "signals.jsonl", tmp_path / "spans.jsonl"
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.signal_settings",
        "DJQUEUE_EXTRA_SETTINGS": json.dumps({"DJQUEUE_LOG_FORMAT": "json"}),
        "DJQUEUE_EXTRA_IMPORTS": "tests.fault_tasks,tests.observed_tasks",
        "DJQUEUE_SIGNAL_FILE": str(signal_file), "DJQUEUE_SPAN_FILE": str(span_file),
        "DJQUEUE_WORKER_LOST_TIMEOUT": "3",  # a heartbeat every half second
    }
    worker = start_worker("-c", "1", "-E", "-n", "observed@test", env=env)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    djqueue_otel.instrument(tracer_provider=provider)
    try:
        with provider.get_tracer("test").start_as_current_span("web request") as web:
            # By name: importing tests.observed_tasks here would connect its task logger's
            # receivers in this process, for every later test.
            logged = app.send_task("tests.observed_tasks.logged", ("a",))
            failed = fail.delay("on purpose")
            retried = fault_tasks.flaky.delay("k", 1)
    finally:
        djqueue_otel.uninstrument()
    assert logged.get(timeout=30) == "a" and retried.get(timeout=30) == 1
    with pytest.raises(DemoError):
        failed.get(timeout=30)
    wait_until(lambda: any(line["signal"] == "heartbeat_sent" for line in read_lines(signal_file)),
               what="a heartbeat")
    worker.send(signal.SIGTERM)
    assert worker.wait(30) == 0

    # Signals: each in the process Celery sends it from.
    lines = read_lines(signal_file)
    main = worker.pid
    children = {line["pid"] for line in lines if line["signal"] == "worker_process_init"}
    assert children and main not in children
    in_main = [line["signal"] for line in lines if line["pid"] == main]
    assert in_main[:6] == ["after_setup_logger", "after_setup_task_logger", "celeryd_init",
                           "celeryd_after_setup", "worker_init", "worker_ready"]
    assert in_main[-2:] == ["worker_shutting_down", "worker_shutdown"]
    assert {"task_received", "heartbeat_sent"} <= set(in_main)
    assert not {"task_prerun", "task_postrun", "task_success", "task_failure"} & set(in_main)
    in_children = [line for line in lines if line["pid"] in children]
    for name, task_id in [("task_prerun", logged.id), ("task_success", None),
                          ("task_postrun", logged.id), ("task_failure", failed.id),
                          ("task_retry", None), ("worker_process_shutdown", None)]:
        found = [line for line in in_children if line["signal"] == name]
        assert found, f"{name} not sent in a pool child"
        if task_id:
            assert task_id in {line.get("task_id") for line in found}
    init = next(line for line in lines if line["signal"] == "celeryd_init")
    assert init["sender"] == "observed@test"
    down = next(line for line in lines if line["signal"] == "worker_shutting_down")
    assert (down["sig"], down["how"], down["exitcode"]) == ("SIGTERM", "Warm", 0)
    received = [line["request"] for line in lines if line["signal"] == "task_received"]
    assert {logged.id, failed.id, retried.id} <= set(received)
    retry = next(line for line in in_children if line["signal"] == "task_retry")
    assert retry["request"] == retried.id and retry["sender"] == "tests.fault_tasks.flaky"

    # JSON lines: the worker's lines about a task, and the task's own, carry the task.
    records = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    succeeded = next(r for r in records if r["message"].startswith(
        f"Task tests.observed_tasks.logged[{logged.id}] succeeded"))
    assert {k: succeeded[k] for k in ("task_id", "task_name", "queue", "worker", "retries")} == {
        "task_id": logged.id, "task_name": "tests.observed_tasks.logged", "queue": "celery",
        "worker": "observed@test", "retries": 0}
    own = next(r for r in records if r["message"] == "working on a")
    assert (own["task_id"], own["logger"], own["worker"]) == (logged.id, "tests.observed_tasks",
                                                             "observed@test")
    assert own["process"].startswith("ForkPoolWorker")
    second = next(r for r in records if r["message"].startswith(
        f"Task tests.fault_tasks.flaky[{retried.id}] succeeded"))
    assert second["retries"] == 1
    assert next(r for r in records if r["message"].startswith("Received task")).get("worker") == (
        "observed@test")

    # celery events --dump: what the worker wrote, read back from the table.
    dump = subprocess.run(
        [sys.executable, "manage.py", "celery", "events", "--dump", "--once", "--since", "600"],
        cwd=ROOT, env=worker_env, capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    out = dump.stdout
    for expected in ("worker online:", "worker heartbeat:", "worker offline:",
                     f"task received: tests.observed_tasks.logged({logged.id}) args=['a']",
                     f"task started: tests.observed_tasks.logged({logged.id})",
                     f"task succeeded: tests.observed_tasks.logged({logged.id}) result='a'",
                     f"task failed: example_project.demo.tasks.fail({failed.id}) exception=",
                     f"task retried: tests.fault_tasks.flaky({retried.id}) exception="):
        assert expected in out, f"{expected!r} not in:\n{out}"
    assert all(line.startswith("observed@test [") for line in out.splitlines())

    # OpenTelemetry: the pool child's span is a child of this process's producer span.
    producer = next(s for s in exporter.get_finished_spans()
                    if s.name == "apply_async/tests.observed_tasks.logged")
    consumer = next(s for s in read_lines(span_file)
                    if s["name"] == "run/tests.observed_tasks.logged")
    trace_id = web.get_span_context().trace_id
    assert producer.context.trace_id == consumer["trace_id"] == trace_id
    assert consumer["parent_id"] == producer.context.span_id and consumer["pid"] in children
