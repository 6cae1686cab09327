"""Tasks with Celery's life-cycle handlers, for tests/test_task_hooks.py and
tests/test_task_hooks_process.py.

Every handler and every run appends a line ``<event> <task id> <detail>`` to DJQUEUE_RECORD_FILE
(one ``write`` per line, ``O_APPEND``), so a test reads from any process which ran, and in which
order.
"""

from __future__ import annotations

import os
import time
from typing import Any

from djqueue import task
from djqueue.client.base import app
from djqueue.exceptions import Ignore, Reject


def note(event: str, task_id: object, detail: object = "") -> None:
    line = f"{event} {task_id} {detail}".rstrip() + "\n"
    fd = os.open(os.environ["DJQUEUE_RECORD_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Recorded(app.Task):
    """Overrides every handler (an ``app.Task`` subclass, used as ``base=``)."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        note("before_start", task_id, f"{list(args)}")

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        note("on_success", task_id, repr(retval))

    def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        note("on_retry", task_id, f"{exc!r} {einfo.type.__name__}")

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        traced = "Traceback" in einfo.traceback and einfo.exception is exc
        note("on_failure", task_id, f"{type(exc).__name__} traced={traced} id={self.request.id}")

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        note("after_return", task_id, f"{status} {retval!r} {einfo}")


class OnlyFailure(app.Task):
    """Overrides one handler; its ``__call__`` wraps the body, as projects' base classes do."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        note("call", self.request.id)
        return super().__call__(*args, **kwargs)

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        note("on_failure", task_id, type(exc).__name__)


@task(base=Recorded, bind=True, default_retry_delay=0)
def hooked(self: Any, action: str = "ok") -> Any:
    """Ends as ``action`` says: ok, fail, retry (once, then ok), unencodable, ignore."""
    note("run", self.request.id, f"retries={self.request.retries}")
    if action == "fail":
        raise ValueError("failed on purpose")
    if action == "retry" and self.request.retries == 0:
        raise self.retry(exc=KeyError("again"), countdown=0)
    if action == "unencodable":
        return object()
    if action == "ignore":
        self.update_state(state="CUSTOM", meta={"why": "ignored on purpose"})
        raise Ignore()
    return action


@task(base=OnlyFailure, bind=True)
def wrapped(self: Any, fail: bool) -> str:
    note("run", self.request.id)
    if fail:
        raise RuntimeError("wrapped failure")
    return "fine"


@task(base=Recorded, bind=True, acks_late=True)
def rejecting(self: Any, requeue: bool) -> str:
    """Rejects its message on its first delivery; runs to its end on a redelivery."""
    redelivered = self.request.delivery_info.get("redelivered", False)
    note("run", self.request.id, f"redelivered={redelivered}")
    if not redelivered or not requeue:
        raise Reject("not now", requeue=requeue)
    return "second time"


@task(bind=True)
def progress(self: Any, gate: str, steps: int = 3) -> str:
    """Stores PROGRESS for each step, then waits for the file ``gate`` before it finishes, so a
    client can see PROGRESS while the call runs."""
    for done in range(1, steps + 1):
        self.update_state(state="PROGRESS", meta={"current": done, "total": steps})
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "finished"


@task(bind=True)
def request_fields(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The request as the call saw it, as data."""
    request = self.request
    note("request", request.id, f"shadow={request.shadow}")
    return {
        name: getattr(request, name)
        for name in ("id", "task", "args", "kwargs", "retries", "is_eager", "eta", "expires",
                     "hostname", "delivery_info", "timelimit", "parent_id", "root_id", "group",
                     "group_index", "chord", "callbacks", "errbacks", "chain", "correlation_id",
                     "reply_to", "origin", "ignore_result", "shadow", "headers", "properties",
                     "called_directly")
    } | {"custom": getattr(request, "tenant", None)}


@task(base=Recorded, bind=True, throws=(LookupError,))
def expecting(self: Any) -> None:
    raise KeyError("expected on purpose")
