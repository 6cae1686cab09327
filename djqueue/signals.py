"""Celery's signals, under Celery's names and with Celery's arguments.

A Celery project connects to ``celery.signals.task_prerun``; after replacing the import it
connects to ``djqueue.signals.task_prerun``. Each signal is sent in the process where Celery
sends it: publishing signals in the process that sends the task, ``task_received``,
``task_revoked``, ``task_rejected``, ``task_unknown`` and the worker's own signals in the worker's
main process, ``task_prerun``/``task_postrun``/``task_success``/``task_failure``/``task_retry``/
``task_internal_error`` and ``worker_process_init``/``worker_process_shutdown`` in the pool process
that runs the task (the prefork child; the worker itself with ``-P solo``).

Nothing is built for a signal that has no receiver: the senders look at ``signal.receivers``
first, so an unused signal costs one attribute read.

Like Celery's (and unlike Django's ``Signal.send``), :meth:`Signal.send` calls every receiver
even when one raises: the error is logged and returned as that receiver's response. Where
djqueue's arguments differ from Celery's (no kombu objects: ``exchange`` is ``""``, ``body`` is
Celery's protocol-2 tuple ``(args, kwargs, embed)``, ``message`` is the claimed row) the README's
"Signals" section says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.dispatch import Signal as DjangoSignal

logger = logging.getLogger("djqueue.signals")

__all__ = [
    "Signal",
    "before_task_publish", "after_task_publish",
    "task_received", "task_prerun", "task_postrun", "task_success", "task_failure", "task_retry",
    "task_revoked", "task_rejected", "task_unknown", "task_internal_error",
    "celeryd_init", "celeryd_after_setup", "worker_init", "worker_process_init", "worker_ready",
    "heartbeat_sent", "worker_shutting_down", "worker_process_shutdown", "worker_shutdown",
    "beat_init", "beat_embedded_init",
    "setup_logging", "after_setup_logger", "after_setup_task_logger",
]


class Signal(DjangoSignal):
    """Django's signal with Celery's manners: a name, ``connect`` usable as a bare decorator
    (``@task_prerun.connect``) or with options (``@task_prerun.connect(sender="tasks.add")``),
    and a ``send`` that logs a failing receiver instead of stopping the others."""

    def __init__(self, name: str, providing_args: list[str] | None = None) -> None:
        super().__init__()
        self.name = name
        self.providing_args = frozenset(providing_args or ())

    def __repr__(self) -> str:
        return f"<Signal: {self.name} providing_args={sorted(self.providing_args)!r}>"

    def connect(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """``connect(receiver, sender=None, weak=True, dispatch_uid=None)``, or a decorator."""
        if args and callable(args[0]):
            receiver, rest = args[0], args[1:]
            super().connect(receiver, *rest, **kwargs)
            _recount()
            return receiver

        def decorate(receiver: Callable[..., Any]) -> Callable[..., Any]:
            super(Signal, self).connect(receiver, *args, **kwargs)
            _recount()
            return receiver

        return decorate

    def disconnect(self, *args: Any, **kwargs: Any) -> bool:  # type: ignore[override]
        removed = super().disconnect(*args, **kwargs)
        _recount()
        return removed

    def send(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:  # type: ignore[override]
        """Call every receiver; a receiver's exception is logged and becomes its response."""
        return self.send_robust(sender, **named)

    def _log_robust_failure(self, receiver: object, err: Exception) -> None:
        # Django's hook for a receiver that raised in send_robust: logged as Celery logs it.
        logger.error("Signal handler %r raised: %r", receiver, err, exc_info=err)


#: True while a receiver is connected to one of the signals of a task's run (prerun, postrun,
#: success, failure, retry): what a pool process reads once per task (client/tracing.Trace).
#: A receiver that was garbage-collected leaves it True until the next connect or disconnect.
run_connected = False


def _recount() -> None:
    global run_connected
    run_connected = any(signal.receivers for signal in (
        task_prerun, task_postrun, task_success, task_failure, task_retry))


# Publishing: in the process that sends the task. Sender: the task's name.
before_task_publish = Signal("before_task_publish", [
    "body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"])
after_task_publish = Signal("after_task_publish", ["body", "exchange", "routing_key", "headers"])

# Tasks.
task_received = Signal("task_received", ["request"])  # worker main process; sender: the worker
task_prerun = Signal("task_prerun", ["task_id", "task", "args", "kwargs"])  # sender: the task
task_postrun = Signal("task_postrun", ["task_id", "task", "args", "kwargs", "retval", "state"])
task_success = Signal("task_success", ["result", "runtime"])
task_failure = Signal("task_failure", [
    "task_id", "exception", "args", "kwargs", "traceback", "einfo"])
task_retry = Signal("task_retry", ["request", "reason", "einfo"])
task_revoked = Signal("task_revoked", ["request", "terminated", "signum", "expired"])
task_rejected = Signal("task_rejected", ["message", "exc"])  # sender: the worker
task_unknown = Signal("task_unknown", ["name", "id", "message", "exc"])  # sender: the worker
task_internal_error = Signal("task_internal_error", [
    "task_id", "args", "kwargs", "request", "exception", "traceback", "einfo"])

# The worker. celeryd_* have the node name as sender.
celeryd_init = Signal("celeryd_init", ["instance", "conf", "options"])
celeryd_after_setup = Signal("celeryd_after_setup", ["instance", "conf"])
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_ready = Signal("worker_ready")
heartbeat_sent = Signal("heartbeat_sent")
worker_shutting_down = Signal("worker_shutting_down", ["sig", "how", "exitcode"])
worker_process_shutdown = Signal("worker_process_shutdown", ["pid", "exitcode"])
worker_shutdown = Signal("worker_shutdown")

# Beat. Sender: the Beat.
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")

# Logging, where ``celery worker``/``celery beat`` set it up. Sender: None.
setup_logging = Signal("setup_logging", ["loglevel", "logfile", "format", "colorize"])
after_setup_logger = Signal("after_setup_logger", [
    "logger", "loglevel", "logfile", "format", "colorize"])
after_setup_task_logger = Signal("after_setup_task_logger", [
    "logger", "loglevel", "logfile", "format", "colorize"])
