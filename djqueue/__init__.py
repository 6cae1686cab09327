"""djqueue: Celery's task-queue API with the Django database as the message broker.

The names below are loaded on first use, so that Django can import this package while it is
still loading apps (the task API needs the models, which need the app registry).
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "App": "djqueue.client.base",
    "app": "djqueue.client.base",
    "AsyncResult": "djqueue.result",
    "Celery": "djqueue.client.celery_app",
    "current_app": "djqueue.client.celery_app",
    "EagerResult": "djqueue.result",
    "GroupResult": "djqueue.result",
    "ResultSet": "djqueue.result",
    "Signature": "djqueue.canvas",
    "group": "djqueue.canvas",
    "chain": "djqueue.canvas",
    "chord": "djqueue.canvas",
    "chunks": "djqueue.canvas",
    "xmap": "djqueue.canvas",
    "xstarmap": "djqueue.canvas",
    "maybe_signature": "djqueue.canvas",
    "signature": "djqueue.canvas",
    "subtask": "djqueue.canvas",
    "Task": "djqueue.client.task",
    "shared_task": "djqueue.decorators",
    "task": "djqueue.decorators",
    "states": "djqueue.states",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'djqueue' has no attribute {name!r}")
    if name == "states":
        return import_module(module)
    return getattr(import_module(module), name)
