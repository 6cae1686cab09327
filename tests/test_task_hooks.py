"""The task life cycle of Celery's Task class, in-process: handlers and their order in ``apply()``
and in the worker's ``execute()``, ``Reject``/``Ignore``, ``update_state``, the request's fields,
call options that travel as headers, ``delay_on_commit``. Real workers:
tests/test_task_hooks_process.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from djqueue import states
from djqueue.backends import ResultRecord
from djqueue.client.base import app
from djqueue.client.headers import shadow_of
from djqueue.client.hooks import hooks_of
from djqueue.exceptions import Ignore, Reject
from djqueue.models import Message
from djqueue.result import AsyncResult
from djqueue.serialization import dumps, loads
from djqueue.worker.execution import Job, execute
from djqueue.worker.outcome_log import log_outcome

from . import hook_tasks
from .hook_tasks import expecting, hooked, progress, rejecting, request_fields, wrapped
from .test_backends import CACHE_SETTINGS, REDIS_RESULTS_URL, redis_available  # noqa: F401


def events(record_file: Path, task_id: str | None = None) -> list[str]:
    """The recorded lines (of one call), without its id: ``"<event> <detail>"``."""
    found = []
    for line in record_file.read_text().splitlines():
        event, _, rest = line.partition(" ")
        call, _, detail = rest.partition(" ")
        if task_id is None or call == task_id:
            found.append(f"{event} {detail}".rstrip())
    return found


def job_of(task: Any, args: tuple[Any, ...] = (), *, acks_late: bool = False,
           deliveries: int = 1, **options: Any) -> Job:
    """The job a worker would run for ``task.apply_async(args, **options)``."""
    message = app.build_message(task.name, args, {}, task=task, options=options)
    head = message.head
    return Job(1, message.task_id, task.name, head.queue, head.priority, head.content_type,
               message.body, 0, "worker@test", acks_late, head.time_limit, head.soft_time_limit,
               deliveries)


# apply(): Celery's eager tracer.


def test_apply_runs_handlers_in_celerys_order(record_file: Path) -> None:
    result = hooked.apply(("ok",))
    assert result.state == states.SUCCESS and result.result == "ok"
    assert events(record_file, result.id) == [
        "before_start ['ok']", "run retries=0", "on_success 'ok'", "after_return SUCCESS 'ok' None"]


def test_apply_failure_runs_on_failure_with_einfo_then_after_return(record_file: Path) -> None:
    result = hooked.apply(("fail",), throw=False)
    assert result.state == states.FAILURE and isinstance(result.result, ValueError)
    assert events(record_file, result.id) == [
        "before_start ['fail']", "run retries=0",
        f"on_failure ValueError traced=True id={result.id}",
        "after_return FAILURE ValueError('failed on purpose') None"]


def test_apply_with_throw_raises_before_the_failure_handlers(record_file: Path) -> None:
    with pytest.raises(ValueError):
        hooked.apply(("fail",), task_id="thrown", throw=True)
    assert events(record_file, "thrown") == ["before_start ['fail']", "run retries=0"]


def test_apply_retry_runs_on_retry_and_no_after_return_for_the_retried_call(
        record_file: Path) -> None:
    result = hooked.apply(("retry",))
    assert result.result == "retry"
    assert events(record_file, result.id) == [
        "before_start ['retry']", "run retries=0", "on_retry KeyError('again') Retry",
        "before_start ['retry']", "run retries=1", "on_success 'retry'",
        "after_return SUCCESS 'retry' None"]


def test_a_class_overriding_call_is_called_through_it(record_file: Path) -> None:
    assert hooks_of(app.tasks["tasks.add"]) is None  # overrides nothing: run() directly
    ok = wrapped.apply((False,))
    failed = wrapped.apply((True,), throw=False)
    assert events(record_file, ok.id) == ["call", "run"]
    assert events(record_file, failed.id) == ["call", "run", "on_failure RuntimeError"]


def test_a_handler_set_by_annotations_is_bound_and_called(record_file: Path) -> None:
    def on_failure(self: Any, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        hook_tasks.note("annotated", task_id, f"{self.name} {type(exc).__name__}")

    with override_settings(CELERY_ANNOTATIONS={"*": {"on_failure": on_failure}}):
        failed = app.tasks[wrapped.name].apply((True,), throw=False)
    assert events(record_file, failed.id) == [
        "call", "run", "annotated tests.hook_tasks.wrapped RuntimeError"]
    again = app.tasks[wrapped.name].apply((True,), throw=False)  # annotation gone: class's own
    assert events(record_file, again.id)[-1] == "on_failure RuntimeError"


def test_a_raising_handler_is_raised_by_apply(record_file: Path) -> None:
    class Boom(Exception):
        pass

    def on_success(self: Any, *args: Any) -> None:
        raise Boom()

    with override_settings(CELERY_ANNOTATIONS={"*": {"on_success": on_success}}):
        with pytest.raises(Boom):
            app.tasks[hooked.name].apply(("ok",))


@pytest.mark.django_db  # update_state() writes to the result backend
def test_reject_and_ignore_end_an_eager_call_without_handlers(
        record_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="djqueue.worker")
    rejected = rejecting.apply((False,))
    ignored = hooked.apply(("ignore",), task_id="ignored-eagerly")
    assert rejected.state == states.REJECTED and isinstance(rejected.result, Reject)
    assert ignored.state == states.IGNORED and isinstance(ignored.result, Ignore)
    assert events(record_file, rejected.id) == ["before_start [False]", "run redelivered=False"]
    assert events(record_file, ignored.id) == ["before_start ['ignore']", "run retries=0"]
    assert f"Task tests.hook_tasks.rejecting[{rejected.id}] reject requeue=False: not now" \
        in caplog.text
    assert "Task tests.hook_tasks.hooked[ignored-eagerly] ignored" in caplog.text


def test_apply_gives_the_request_celerys_fields_and_the_call_headers(record_file: Path) -> None:
    fields = request_fields.apply((1,), {"k": 2}, task_id="eager-1", headers={"tenant": "t1"},
                                  shadow="nickname", ignore_result=True).result
    assert fields["id"] == fields["correlation_id"] == "eager-1"
    assert fields["task"] == request_fields.name
    assert (fields["args"], fields["kwargs"]) == ([1], {"k": 2})
    assert fields["is_eager"] is True and fields["called_directly"] is False
    assert fields["headers"] == {"tenant": "t1"} and fields["custom"] == "t1"
    assert fields["shadow"] == "nickname" and fields["ignore_result"] is True
    for workflow in ("parent_id", "root_id", "group", "group_index", "chord", "callbacks",
                     "errbacks", "chain", "reply_to", "origin"):
        assert fields[workflow] is None, workflow
    outside = request_fields.request  # not running: Celery's defaults
    assert outside.called_directly is True and outside.headers is None


# The message: call options that travel as headers.


def _payload(**options: Any) -> dict[str, Any]:
    message = app.build_message(request_fields.name, (), {}, task=request_fields, options=options)
    return loads(message.body, message.head.content_type, ["json"])


def test_call_options_travel_as_headers_and_plain_calls_carry_none() -> None:
    assert "headers" not in _payload()
    assert "headers" not in _payload(ignore_result=False, shadow=None)  # the defaults
    assert _payload(headers={"tenant": "t1"}, shadow="nick", ignore_result=True)["headers"] == {
        "tenant": "t1", "shadow": "nick", "ignore_result": True}
    with pytest.raises(TypeError, match="headers must be a mapping"):
        _payload(headers=["tenant"])
    with pytest.raises(TypeError, match="Unknown apply_async option"):
        _payload(shadoww="nick")


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_the_worker_reads_a_shadow_name_from_a_body(serializer: str) -> None:
    accept = ["json", "pickle"]
    content_type, body = dumps({"args": [], "kwargs": {}, "headers": {"shadow": "nick"}},
                               serializer)
    assert shadow_of(body, content_type, accept) == "nick"
    assert shadow_of(body, content_type, ["yaml"]) is None  # not accepted: the task's name
    # The word in an argument only: decoded, no shadow; a header of another name: not decoded.
    assert shadow_of(dumps({"args": ["shadow"]}, serializer)[1], content_type, accept) is None
    assert shadow_of(dumps({"headers": {"tenant": 1}}, serializer)[1], content_type, accept) is None
    assert shadow_of(dumps({"headers": {"shadow": ""}}, serializer)[1], content_type, accept) is None


def test_shadow_name_method_names_the_call() -> None:
    class Shadowed(app.Task):
        def shadow_name(self, args: Any, kwargs: Any, options: Any) -> str:
            return f"shadow-of-{args[0]}"

    shadowed = app.task(base=Shadowed, bind=True, name="tests.hooks.shadowed")(
        lambda self, x: self.request.shadow)
    with override_settings(CELERY_ALWAYS_EAGER=True):
        assert shadowed.delay("x").result == "shadow-of-x"
        assert shadowed.apply_async(("x",), shadow="given").result == "given"


# The worker's side: execute() as a pool process runs a job.


@pytest.mark.django_db
def test_execute_runs_handlers_in_order_and_encode_errors_fail(record_file: Path) -> None:
    ok = execute(job_of(hooked, ("ok",)))
    assert (ok.state, ok.action, ok.store) == (states.SUCCESS, "ack", True)
    assert events(record_file, ok.job.task_id) == [
        "before_start ['ok']", "run retries=0", "on_success 'ok'", "after_return SUCCESS 'ok' None"]
    bad = execute(job_of(hooked, ("unencodable",)))
    assert bad.state == states.FAILURE and "EncodeError" in bad.result
    failure, after = events(record_file, bad.job.task_id)[2:]
    assert failure == f"on_failure EncodeError traced=True id={bad.job.task_id}"
    assert after.startswith("after_return FAILURE EncodeError(")


@pytest.mark.django_db
def test_execute_reject_and_ignore_settle_messages_as_celery(
        record_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="djqueue.worker")
    back = execute(job_of(rejecting, (True,), acks_late=True))
    assert (back.state, back.action, back.store) == (states.REJECTED, "requeue", False)
    dead = execute(job_of(rejecting, (False,), acks_late=True))
    assert (dead.state, dead.action, dead.store) == (states.FAILURE, "reject", True)
    assert "Reject" in dead.result and dead.traceback
    gone = execute(job_of(rejecting, (True,), acks_late=False))  # acknowledged at its start
    assert (gone.state, gone.action) == (states.FAILURE, "ack")
    ignored = execute(job_of(hooked, ("ignore",)))
    assert (ignored.state, ignored.action, ignored.store) == (states.IGNORED, "ack", False)
    for outcome in (back, dead, gone, ignored):  # no handler after the body
        assert [e.split()[0] for e in events(record_file, outcome.job.task_id)] == [
            "before_start", "run"]
        log_outcome(outcome)  # logged by the pool process already: nothing more
    assert caplog.text.count(" reject requeue=") == 3 and caplog.text.count("] ignored") == 1
    assert "raised unexpected" not in caplog.text
    stored = AsyncResult(ignored.job.task_id)  # Ignore leaves what update_state() stored
    assert stored.state == "CUSTOM" and stored.info == {"why": "ignored on purpose"}


@pytest.mark.django_db
def test_execute_reads_the_request_from_the_message(
        record_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="djqueue.worker")
    job = job_of(request_fields, (1,), headers={"tenant": "t1"}, shadow="nick",
                 time_limit=30, soft_time_limit=20, deliveries=2)
    payload = json.loads(job.body)  # as the canvas writes workflow fields: Celery's names
    payload.update(parent_id="p-1", root_id="r-1", group="g-1", group_index=0)
    job.body = json.dumps(payload)
    outcome = execute(job)
    fields = json.loads(outcome.result)
    assert fields["id"] == fields["correlation_id"] == job.task_id
    assert fields["is_eager"] is False and fields["hostname"] == "worker@test"
    assert fields["timelimit"] == [30, 20]
    assert fields["delivery_info"] == {"routing_key": "celery", "priority": job.priority,
                                       "redelivered": True}
    assert (fields["parent_id"], fields["root_id"], fields["group"], fields["group_index"]) == (
        "p-1", "r-1", "g-1", 0)
    assert fields["headers"] == {"tenant": "t1"} and fields["custom"] == "t1"
    assert fields["chord"] is None and fields["callbacks"] is None
    assert fields["properties"] == {"correlation_id": job.task_id, "reply_to": None,
                                    "priority": job.priority}
    log_outcome(outcome)
    assert f"Task nick[{job.task_id}] succeeded in" in caplog.text


@pytest.mark.django_db
def test_ignore_result_per_call_drops_the_value_not_an_error(record_file: Path) -> None:
    assert execute(job_of(hooked, ("ok",), ignore_result=True)).store is False
    assert execute(job_of(hooked, ("fail",), ignore_result=True)).store is True
    assert execute(job_of(hooked, ("ok",))).store is True


# update_state and delay_on_commit.


@pytest.mark.django_db
def test_update_state_is_read_back_and_replaced_by_the_final_state(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    outcome = execute(job_of(progress, (str(gate),)))
    seen = AsyncResult(outcome.job.task_id)
    assert seen.state == "PROGRESS" and seen.info == {"current": 3, "total": 3}
    assert not seen.ready()
    app.backend.store([ResultRecord(outcome.job.task_id, outcome.state, outcome.job.task_name,
                                    outcome.content_type, outcome.result)])  # as a round does
    final = AsyncResult(outcome.job.task_id)
    assert final.state == states.SUCCESS and final.get(timeout=1) == "finished"
    with pytest.raises(ValueError, match="state name"):
        progress.update_state(task_id="x", state="")
    with pytest.raises(ValueError, match="needs a task_id"):
        progress.update_state(state="PROGRESS")


@pytest.mark.django_db
def test_delay_on_commit_sends_after_the_commit_and_never_on_rollback(
        django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=True) as sent:
        assert hooked.delay_on_commit("ok") is None
        hooked.apply_async_on_commit(("ok",), countdown=60)
        assert not Message.objects.exists()
    assert len(sent) == 2 and Message.objects.count() == 2
    with django_capture_on_commit_callbacks(execute=True) as sent:
        with pytest.raises(RuntimeError), transaction.atomic():
            hooked.delay_on_commit("ok")
            raise RuntimeError("roll back")
    assert sent == [] and Message.objects.count() == 2


@pytest.mark.django_db
def test_a_raising_handler_in_the_worker_is_logged_and_the_outcome_stays(
        record_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    def on_success(self: Any, *args: Any) -> None:
        raise LookupError("handler broke")

    with override_settings(CELERY_ANNOTATIONS={"*": {"on_success": on_success}}):
        app.tasks[hooked.name]  # the worker takes its tasks from the registry, annotated
        outcome = execute(job_of(hooked, ("ok",)))
    assert (outcome.state, outcome.action, json.loads(outcome.result)) == (
        states.SUCCESS, "ack", "ok")
    assert f"Task tests.hook_tasks.hooked[{outcome.job.task_id}] INTERNAL ERROR: " \
        "LookupError('handler broke')" in caplog.text
    assert "after_return" not in " ".join(events(record_file, outcome.job.task_id))


@pytest.mark.django_db
def test_headers_that_are_not_a_mapping_set_the_message_aside() -> None:
    job = job_of(hooked, ("ok",))
    job.body = json.dumps({"args": ["ok"], "kwargs": {}, "headers": "not a mapping"})
    outcome = execute(job)
    assert (outcome.state, outcome.action) == (states.FAILURE, "reject")
    assert "Malformed message body" in outcome.result_repr


def test_base_must_be_a_task_class() -> None:
    with pytest.raises(TypeError, match="must be a subclass of djqueue's Task"):
        app.task(base=object)(lambda: None)


@pytest.mark.parametrize("backend", ["cache", "redis"])
def test_update_state_through_the_cache_and_redis_backends(
        redis_available: None, tmp_path: Path, backend: str) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    settings = CACHE_SETTINGS if backend == "cache" else {
        "CELERY_RESULT_BACKEND": REDIS_RESULTS_URL}
    with override_settings(**settings):
        result = progress.apply((str(gate),), task_id=f"{backend}-progress-{tmp_path.name}")
        assert result.result == "finished"  # eager: the final state is not stored, PROGRESS is
        seen = AsyncResult(result.id)
        assert seen.state == "PROGRESS" and seen.info == {"current": 3, "total": 3}
        seen.forget()


@pytest.mark.django_db
def test_an_expected_failure_is_logged_at_info_without_traceback(
        record_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="djqueue.worker")
    outcome = execute(job_of(expecting))
    assert (outcome.state, outcome.store) == (states.FAILURE, True) and outcome.traceback
    log_outcome(outcome)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(
        "INFO", f"Task tests.hook_tasks.expecting[{outcome.job.task_id}] raised expected: "
        "KeyError('expected on purpose')")]
    assert events(record_file, outcome.job.task_id)[-2].startswith("on_failure KeyError")
