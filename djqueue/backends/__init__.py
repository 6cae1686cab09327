"""Result backends behind one small interface (:class:`~djqueue.backends.base.ResultBackend`)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from ..exceptions import ImproperlyConfigured
from .base import ResultBackend, ResultRecord
from .cache import CacheBackend
from .database import DatabaseBackend
from .disabled import DisabledBackend

if TYPE_CHECKING:
    from ..conf import Settings

__all__ = ["ResultBackend", "ResultRecord", "backend_from_setting", "backend_key", "BACKEND_NAMES"]

#: ``CELERY_RESULT_BACKEND`` values and the backend each selects.
BACKEND_NAMES: dict[str | None, type[ResultBackend]] = {
    None: DisabledBackend,
    "disabled": DisabledBackend,
    "database": DatabaseBackend,
    "django-db": DatabaseBackend,
    "cache": CacheBackend,
    "django-cache": CacheBackend,
}


#: Celery's URL schemes that name a result store djqueue has (``redis://host:port/db``,
#: ``cache+memcached://host:port/``), and the backend each selects (by module, see below).
URL_SCHEMES = {"redis": "redis", "rediss": "redis", "unix": "redis", "cache+memcached": "cache"}

SUPPORTED = ("'database' (or 'django-db'), 'cache' (or 'django-cache': the CACHES alias that "
             "CELERY_CACHE_BACKEND names), 'redis://host:port/db', 'cache+memcached://host:port/',"
             " or unset to keep no results")


def backend_class(value: object) -> type[ResultBackend]:
    """The backend class ``CELERY_RESULT_BACKEND = value`` selects; ImproperlyConfigured if none
    (``rpc://`` and ``amqp://``, Celery's message-broker backends, included: djqueue's broker
    is the database)."""
    key = value.lower() if isinstance(value, str) else value
    scheme = key.partition("://")[0] if isinstance(key, str) and "://" in key else None
    kind = URL_SCHEMES.get(scheme or "")
    if kind is not None:
        package = "redis" if kind == "redis" else "pymemcache"
        if importlib.util.find_spec(package) is None:
            raise ImproperlyConfigured(
                f"CELERY_RESULT_BACKEND = {value!r} needs the {package} package: "
                f"pip install {'djqueue[redis]' if kind == 'redis' else 'pymemcache'}")
    if kind == "redis":
        # Imported when chosen: it needs the redis package, an optional dependency.
        from .redis import RedisBackend

        return RedisBackend
    if kind == "cache":
        return CacheBackend
    try:
        return BACKEND_NAMES[key]  # type: ignore[index]
    except (KeyError, TypeError):
        why = (" (Celery's result backend over the message broker; djqueue's broker is the "
               "database)" if scheme in ("rpc", "amqp") else "")
        raise ImproperlyConfigured(
            f"CELERY_RESULT_BACKEND = {value!r} is not a result backend djqueue has{why}; "
            f"use {SUPPORTED}."
        ) from None


def backend_key(conf: Settings) -> tuple[object, ...]:
    """The settings a backend is built from: when they change, the app builds a new one."""
    return (
        conf.CELERY_RESULT_BACKEND, conf.broker_alias, conf.CELERY_CACHE_BACKEND, conf.result_expires,
    )


def backend_from_setting(conf: Settings) -> ResultBackend:
    """Build the backend that ``CELERY_RESULT_BACKEND`` asks for."""
    return backend_class(conf.CELERY_RESULT_BACKEND).from_conf(conf)
