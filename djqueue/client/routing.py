"""Where a message goes: its queue and priority.

Precedence, highest first: the call's ``queue=``/``priority=``, ``CELERY_ROUTES``, the task's own
``queue``/``priority`` options, ``CELERY_DEFAULT_QUEUE``/``CELERY_DEFAULT_PRIORITY``.

``CELERY_ROUTES`` may be a mapping (task name or glob pattern -> queue name or options dict), a
router (an object with ``route_for_task(task, args, kwargs)``, or a plain callable taking the same
arguments), a dotted path to a router, or a list of these consulted in order until one answers.

``CELERY_QUEUES`` names the queues (a list of names, a mapping keyed by name, or objects with a
``name``, such as kombu's ``Queue``). A worker started without ``-Q`` consumes all of them. With
``CELERY_CREATE_MISSING_QUEUES = False`` a message routed to a queue not listed there is refused.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from django.utils.module_loading import import_string

from ..exceptions import ImproperlyConfigured, QueueNotFound

MAX_PRIORITY = 255


def _as_options(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"queue": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ImproperlyConfigured(f"A route must give a queue name or a dict of options, not {value!r}")


def routers(routes: Any) -> list[Any]:
    if routes is None:
        return []
    if isinstance(routes, (list, tuple)):
        return [router for item in routes for router in routers(item)]
    if isinstance(routes, str):
        return [import_string(routes)]
    return [routes]


def _ask(router: Any, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    if isinstance(router, Mapping):
        if name in router:
            return router[name]
        for pattern, target in router.items():
            if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(name, pattern):
                return target
        return None
    if isinstance(router, type):
        router = router()
    if hasattr(router, "route_for_task"):
        return router.route_for_task(name, args, kwargs)
    if callable(router):
        return router(name, args, kwargs)
    raise ImproperlyConfigured(f"CELERY_ROUTES entry {router!r} is not a mapping or a router")


def route(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    routes: Any,
    call_queue: str | None,
    call_priority: int | None,
    task_options: Mapping[str, Any],
    default_queue: str,
    default_priority: int | None,
) -> tuple[str, int]:
    """Return ``(queue, priority)`` for one message."""
    routed: dict[str, Any] = {}
    for router in routers(routes):
        answer = _as_options(_ask(router, name, args, kwargs))
        if answer is not None:
            routed = answer
            break
    queue = call_queue or routed.get("queue") or task_options.get("queue") or default_queue
    priority = call_priority
    for source in (routed.get("priority"), task_options.get("priority"), default_priority):
        if priority is None:
            priority = source
    priority = 0 if priority is None else priority
    if not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be an integer from 0 to {MAX_PRIORITY}, not {priority!r}")
    return str(queue), priority


def queue_names(setting: Any) -> list[str] | None:
    """The queue names ``CELERY_QUEUES`` lists, or None when it is not set."""
    if setting is None:
        return None
    if isinstance(setting, str):
        raise ImproperlyConfigured(
            f"CELERY_QUEUES must be a list of queue names, not the string {setting!r}"
        )
    names = []
    for item in setting:
        name = item if isinstance(item, str) else getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise ImproperlyConfigured(f"CELERY_QUEUES entry {item!r} names no queue")
        names.append(name)
    return names


def worker_queues(conf: Any, requested: Sequence[str] | None = None) -> list[str]:
    """What a worker consumes: its ``-Q`` queues, else every ``CELERY_QUEUES`` queue, else the
    default queue. ``-Q`` queues must be known when missing queues may not be created."""
    if not requested:
        return queue_names(conf.CELERY_QUEUES) or [conf.CELERY_DEFAULT_QUEUE]
    try:
        for queue in requested:
            ensure_known(queue, conf)
    except QueueNotFound as exc:
        raise ImproperlyConfigured(f"Cannot consume from it: {exc}") from None
    return list(requested)


def ensure_known(queue: str, conf: Any) -> None:
    """Refuse ``queue`` when missing queues may not be created and ``CELERY_QUEUES`` lacks it."""
    if conf.CELERY_CREATE_MISSING_QUEUES:
        return
    known = worker_queues(conf)
    if queue not in known:
        raise QueueNotFound(
            f"Queue {queue!r} is not in CELERY_QUEUES ({', '.join(known)}) and "
            "CELERY_CREATE_MISSING_QUEUES is False"
        )
