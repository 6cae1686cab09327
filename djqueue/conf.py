"""The one reader of ``django.conf.settings`` for queue settings.

Every setting has Celery 3.1's name and default. Celery ≥4 names in the ``CELERY_`` namespace are
accepted as aliases. Runtime overrides (``app.conf.CELERY_TASK_SERIALIZER = "json"``,
``app.conf.update(...)``) win over settings.

A value is looked up once and then kept: every ``delay()`` reads several settings, and a missing
one costs an exception in ``django.conf.settings`` each time. The kept values are dropped when an
override is set and when Django sends ``setting_changed`` (``override_settings``, pytest-django's
``settings`` fixture), the signal Django's own cached settings rely on; assigning to
``django.conf.settings`` at run time, which Django does not support, is not seen.
"""

from __future__ import annotations

import datetime
import weakref
import zoneinfo
from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.utils import timezone as django_timezone

from .setting_names import ALIASES, ConfigSource, canonical_name

#: Celery 3.1 name -> default.
DEFAULTS: dict[str, Any] = {
    "BROKER_URL": "django://",
    "BROKER_TRANSPORT_OPTIONS": {},
    "CELERY_ACCEPT_CONTENT": ["json"],
    "CELERY_ACKS_LATE": False,
    "CELERY_ALWAYS_EAGER": False,
    "CELERY_ANNOTATIONS": None,
    "CELERY_CACHE_BACKEND": "default",
    "CELERY_CREATE_MISSING_QUEUES": True,
    "CELERY_DEFAULT_PRIORITY": None,
    "CELERY_DEFAULT_QUEUE": "celery",
    "CELERY_DEFAULT_RATE_LIMIT": None,
    "CELERY_DISABLE_RATE_LIMITS": False,
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": False,
    "CELERY_ENABLE_UTC": True,
    "CELERY_IGNORE_RESULT": False,
    "CELERY_IMPORTS": (),
    # Modules imported after CELERY_IMPORTS (Celery's ``include``, also ``Celery(include=...)``).
    "CELERY_INCLUDE": (),
    "CELERY_QUEUES": None,
    "CELERY_RESULT_BACKEND": None,
    "CELERY_RESULT_SERIALIZER": "json",
    "CELERY_ROUTES": None,
    # Workers record task and worker events (djqueue_event) for `celery events` (`worker -E`).
    "CELERY_SEND_EVENTS": False,
    "CELERY_STORE_ERRORS_EVEN_IF_IGNORED": False,
    "CELERY_TASK_RESULT_EXPIRES": 86400,
    "CELERY_TASK_SERIALIZER": "json",
    "CELERY_TIMEZONE": None,
    "CELERY_TRACK_STARTED": False,
    "CELERYBEAT_MAX_LOOP_INTERVAL": 0,
    "CELERYBEAT_SCHEDULE": {},
    "CELERYD_CONCURRENCY": 0,
    "CELERYD_MAX_TASKS_PER_CHILD": None,
    "CELERYD_POOL": "prefork",
    "CELERYD_PREFETCH_MULTIPLIER": 4,
    "CELERYD_TASK_SOFT_TIME_LIMIT": None,
    "CELERYD_TASK_TIME_LIMIT": None,
    # djqueue's own: seconds without a heartbeat after which a worker's messages are recovered.
    "DJQUEUE_WORKER_LOST_TIMEOUT": 30.0,
    # djqueue's own: starts after which an acks_late message whose process is lost each time is
    # set aside (FAILURE WorkerLostError) rather than run again; None: no bound.
    "DJQUEUE_MAX_DELIVERIES": 5,
    # djqueue's own: seconds of expected work a prefork child may have queued behind the task it
    # runs (short tasks are sent in batches); 0 sends one task at a time.
    "DJQUEUE_POOL_BATCH_WINDOW": 0.02,
    # djqueue's own: seconds a beat's leadership lasts unless renewed (the failover time).
    "DJQUEUE_BEAT_LEASE_SECONDS": 20.0,
    # djqueue's own: the database alias (in DATABASES) workers LISTEN on, when the broker's alias
    # goes through a pooler in transaction mode; it must connect to PostgreSQL directly.
    "DJQUEUE_LISTEN_DATABASE": None,
    # djqueue's own: seconds events are kept (workers delete older ones).
    "DJQUEUE_EVENTS_EXPIRES": 3600.0,
    # djqueue's own: "text" (Celery's lines) or "json" (one object a line) for worker and beat.
    "DJQUEUE_LOG_FORMAT": "text",
    # djqueue's own: seconds per-minute task statistics are kept before being folded into totals.
    "DJQUEUE_STATS_RETENTION": 7200,
    # djqueue's own: seconds a stopped or lost worker stays in the Workers list; None: for ever.
    "DJQUEUE_WORKER_FORGET_AFTER": 3600,
    # djqueue's own: what a task's rate limit counts by default: "worker" (each worker's own
    # starts, Celery's meaning) or "cluster" (all workers' starts together, through the database).
    "DJQUEUE_RATE_LIMIT_SCOPE": "worker",
}

#: Setting-name prefixes of Celery's settings. A Django setting with one of these prefixes that is
#: not a setting (or alias) djqueue knows is reported by the system checks as unused.
CELERY_PREFIXES = ("CELERY_", "CELERYD_", "CELERYBEAT_", "CELERYMON_", "BROKER_")

_CANONICAL_ALIASES: dict[str, list[str]] = {}
for _new, _old in ALIASES.items():
    _CANONICAL_ALIASES.setdefault(_old, []).append(_new)

_UNSET = object()

#: Every Settings instance, so that a settings change can drop what each one keeps.
_INSTANCES: weakref.WeakValueDictionary[int, Settings] = weakref.WeakValueDictionary()


def _forget_cached(**_: Any) -> None:
    for instance in list(_INSTANCES.values()):
        instance.forget()


setting_changed.connect(_forget_cached, dispatch_uid="djqueue.conf.forget_cached")


class Settings(Mapping[str, Any]):
    """Read-only view of the queue settings, with runtime overrides on top."""

    def __init__(self) -> None:
        object.__setattr__(self, "_overrides", {})
        object.__setattr__(self, "_generation", 0)
        object.__setattr__(self, "_source", None)
        _INSTANCES[id(self)] = self

    def forget(self) -> None:
        """Drop the values kept since they were last read (see the module docstring)."""
        kept = self.__dict__
        for name in [name for name in kept if not name.startswith("_")]:
            kept.pop(name, None)
        kept["_generation"] += 1

    def _lookup(self, name: str) -> Any:
        name = canonical_name(name)
        if name not in DEFAULTS:
            raise AttributeError(f"{name!r} is not a setting djqueue knows")
        if name in self._overrides:
            return self._overrides[name]
        if self._source is not None:
            value = self._source.get(name, _UNSET)
            if value is not _UNSET:
                return value
        value = getattr(django_settings, name, _UNSET)
        if value is _UNSET:
            for alias in _CANONICAL_ALIASES.get(name, ()):
                value = getattr(django_settings, alias, _UNSET)
                if value is not _UNSET:
                    break
        return DEFAULTS[name] if value is _UNSET else value

    def __getattr__(self, name: str) -> Any:
        """Called only for a value not kept yet: read it and keep it as an instance attribute,
        which later reads find without calling any code."""
        generation = self._generation
        value = self._lookup(name)
        if generation == self._generation:  # not forgotten meanwhile (by another thread)
            self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        canonical = canonical_name(name)
        if canonical not in DEFAULTS:
            raise AttributeError(f"{name!r} is not a setting djqueue knows")
        self._overrides[canonical] = value
        self.forget()

    def update(self, other: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Override several settings at once, as ``app.conf.update(...)`` does in Celery."""
        for key, value in {**(other or {}), **kwargs}.items():
            setattr(self, key, value)

    def read_from(self, source: ConfigSource | None) -> None:
        """Read settings from ``source`` first (``app.config_from_object()`` of an object other
        than the Django settings' ``CELERY_`` namespace); None: from the Django settings only."""
        object.__setattr__(self, "_source", source)
        self.forget()

    def reset(self) -> None:
        """Drop every runtime override and any ``config_from_object`` source (tests use this)."""
        self._overrides.clear()
        object.__setattr__(self, "_source", None)
        self.forget()

    def __getitem__(self, name: str) -> Any:
        try:
            return self._lookup(name)
        except AttributeError as exc:
            raise KeyError(name) from exc

    def __iter__(self) -> Iterator[str]:
        return iter(DEFAULTS)

    def __len__(self) -> int:
        return len(DEFAULTS)

    # Derived values that several modules need.

    @property
    def broker_alias(self) -> str:
        """The Django database alias used as broker: ``django://`` or ``django://<alias>``."""
        url = str(self.BROKER_URL or "django://")
        scheme, _, rest = url.partition("://")
        if scheme != "django":
            return "default"
        return rest.strip("/") or "default"

    @property
    def polling_interval(self) -> float | None:
        """Seconds an idle worker waits between looks at the queue; None: the broker vendor's
        default (``Operations.polling_interval``)."""
        value = (self.BROKER_TRANSPORT_OPTIONS or {}).get("polling_interval")
        return None if value is None else float(value)

    @property
    def timezone(self) -> datetime.tzinfo:
        """The time zone naive ``eta``/``expires`` datetimes are read in.

        As in Celery: ``CELERY_TIMEZONE`` when set; otherwise UTC while ``CELERY_ENABLE_UTC`` is
        on (the default); otherwise local time, which for a Django project is ``TIME_ZONE``.
        """
        if self.CELERY_TIMEZONE:
            return zoneinfo.ZoneInfo(str(self.CELERY_TIMEZONE))
        if self.CELERY_ENABLE_UTC:
            return datetime.timezone.utc
        return django_timezone.get_default_timezone()

    @property
    def result_expires(self) -> float | None:
        """``CELERY_TASK_RESULT_EXPIRES`` in seconds (it may be a number or a timedelta); None
        or 0 keeps results for ever."""
        value = self.CELERY_TASK_RESULT_EXPIRES
        if isinstance(value, datetime.timedelta):
            value = value.total_seconds()
        return float(value) if value else None
