"""Celery's two sets of setting names, for the settings djqueue reads.

djqueue keys its settings by their Celery 3.1 names (``CELERY_ALWAYS_EAGER``, ``CELERYD_POOL``).
Celery 4 renamed them to lowercase names (``task_always_eager``, ``worker_pool``): a Django
project writes those upper-cased in the ``CELERY_`` namespace (``CELERY_TASK_ALWAYS_EAGER``, as
``app.config_from_object("django.conf:settings", namespace="CELERY")`` reads them), and code
writes them as they are (``app.conf.task_always_eager = True``, a ``celeryconfig`` module).

Celery refuses a configuration that mixes the two sets; so does djqueue's check
``djqueue.E001``. Some names are spelled alike in both sets (``CELERY_RESULT_BACKEND`` is
``result_backend`` in the namespace): those are neither old nor new and mix with either.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

#: Celery ≥4 name -> Celery 3.1 name, for every Celery setting djqueue reads (Celery's
#: documented table, limited to those; djqueue's own ``DJQUEUE_*`` settings have one name).
NEW_NAMES: dict[str, str] = {
    "accept_content": "CELERY_ACCEPT_CONTENT",
    "beat_max_loop_interval": "CELERYBEAT_MAX_LOOP_INTERVAL",
    "beat_schedule": "CELERYBEAT_SCHEDULE",
    "broker_transport_options": "BROKER_TRANSPORT_OPTIONS",
    "broker_url": "BROKER_URL",
    "cache_backend": "CELERY_CACHE_BACKEND",
    "enable_utc": "CELERY_ENABLE_UTC",
    "imports": "CELERY_IMPORTS",
    "include": "CELERY_INCLUDE",
    "result_backend": "CELERY_RESULT_BACKEND",
    "result_expires": "CELERY_TASK_RESULT_EXPIRES",
    "result_serializer": "CELERY_RESULT_SERIALIZER",
    "task_acks_late": "CELERY_ACKS_LATE",
    "task_always_eager": "CELERY_ALWAYS_EAGER",
    "task_annotations": "CELERY_ANNOTATIONS",
    "task_create_missing_queues": "CELERY_CREATE_MISSING_QUEUES",
    "task_default_priority": "CELERY_DEFAULT_PRIORITY",
    "task_default_queue": "CELERY_DEFAULT_QUEUE",
    "task_default_rate_limit": "CELERY_DEFAULT_RATE_LIMIT",
    "task_eager_propagates": "CELERY_EAGER_PROPAGATES_EXCEPTIONS",
    "task_ignore_result": "CELERY_IGNORE_RESULT",
    "task_queues": "CELERY_QUEUES",
    "task_routes": "CELERY_ROUTES",
    "task_serializer": "CELERY_TASK_SERIALIZER",
    "task_soft_time_limit": "CELERYD_TASK_SOFT_TIME_LIMIT",
    "task_store_errors_even_if_ignored": "CELERY_STORE_ERRORS_EVEN_IF_IGNORED",
    "task_time_limit": "CELERYD_TASK_TIME_LIMIT",
    "task_track_started": "CELERY_TRACK_STARTED",
    "timezone": "CELERY_TIMEZONE",
    "worker_concurrency": "CELERYD_CONCURRENCY",
    "worker_disable_rate_limits": "CELERY_DISABLE_RATE_LIMITS",
    "worker_max_tasks_per_child": "CELERYD_MAX_TASKS_PER_CHILD",
    "worker_pool": "CELERYD_POOL",
    "worker_prefetch_multiplier": "CELERYD_PREFETCH_MULTIPLIER",
    "worker_send_task_events": "CELERY_SEND_EVENTS",
}

#: The namespace a Django project gives its Celery settings.
NAMESPACE = "CELERY"


def namespaced(new_name: str, namespace: str | None = NAMESPACE) -> str:
    """How a Django settings module spells Celery ≥4 name ``new_name``: ``CELERY_TASK_ROUTES``."""
    return f"{namespace}_{new_name.upper()}" if namespace else new_name.upper()


#: The Celery ≥4 names as Django settings (``CELERY_`` namespace) -> Celery 3.1 name, where the
#: two differ (``CELERY_TASK_ROUTES`` -> ``CELERY_ROUTES``).
ALIASES: dict[str, str] = {
    namespaced(new): old for new, old in NEW_NAMES.items() if namespaced(new) != old
}

#: Django setting names that belong to one set only: a project using names of both is refused.
OLD_ONLY = frozenset(NEW_NAMES.values()) - {namespaced(new) for new in NEW_NAMES}
NEW_ONLY = frozenset(ALIASES)


def canonical_name(name: str) -> str:
    """The Celery 3.1 name of ``name``: itself, or the one its Celery ≥4 spelling (namespaced or
    lowercase) stands for. A name of neither set is returned as it is."""
    return ALIASES.get(name) or NEW_NAMES.get(name) or name


def renamed(old_name: str) -> str:
    """The Celery ≥4 Django setting (``CELERY_`` namespace) for Celery 3.1 name ``old_name``."""
    return next(name for name, old in ALIASES.items() if old == old_name)


def mixed(names: set[str]) -> tuple[list[str], list[str]]:
    """``(old, new)``: the old-only and new-only names among ``names`` when both occur, else two
    empty lists."""
    old, new = sorted(names & OLD_ONLY), sorted(names & NEW_ONLY)
    return (old, new) if old and new else ([], [])


class ConfigSource:
    """Settings read from an object, as Celery's ``app.config_from_object(obj, namespace=...)``
    reads them: a module, a class, a mapping, or the dotted path of one (``"proj.celeryconfig"``,
    ``"pkg.module:attribute"``), imported when a setting is first read.

    Without a namespace a setting is found under its Celery ≥4 name (``task_always_eager``) or its
    Celery 3.1 name (``CELERY_ALWAYS_EAGER``); with one, under the upper-cased new name after the
    namespace (``"TASKS"``: ``TASKS_TASK_ALWAYS_EAGER``). djqueue's own ``DJQUEUE_*`` settings keep
    their one name.
    """

    def __init__(self, source: object, namespace: str | None = None) -> None:
        self._source = source
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"<ConfigSource {self._source!r} namespace={self.namespace!r}>"

    def _object(self) -> Any:
        if isinstance(self._source, str):
            module, _, attribute = self._source.partition(":")
            found: Any = import_module(module)
            for part in filter(None, attribute.split(".")):
                found = getattr(found, part)
            self._source = found
        return self._source

    def spellings(self, canonical: str) -> list[str]:
        new = [name for name, old in NEW_NAMES.items() if old == canonical]
        if not new:
            return [canonical]
        if self.namespace:
            return [namespaced(name, self.namespace) for name in new]
        return [*new, canonical]

    def get(self, canonical: str, default: Any) -> Any:
        """The value of setting ``canonical`` (a Celery 3.1 name) in the source, or ``default``."""
        source = self._object()
        for spelling in self.spellings(canonical):
            if isinstance(source, Mapping):
                if spelling in source:
                    return source[spelling]
            elif hasattr(source, spelling):
                return getattr(source, spelling)
        return default
