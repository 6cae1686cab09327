"""Result backends behind one small interface (:class:`~djqueue.backends.base.ResultBackend`)."""

from __future__ import annotations

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


def backend_class(value: object) -> type[ResultBackend]:
    """The backend class ``CELERY_RESULT_BACKEND = value`` selects; ImproperlyConfigured if none."""
    key = value.lower() if isinstance(value, str) else value
    try:
        return BACKEND_NAMES[key]  # type: ignore[index]
    except (KeyError, TypeError):
        known = ", ".join(repr(name) for name in BACKEND_NAMES if name)
        raise ImproperlyConfigured(
            f"CELERY_RESULT_BACKEND = {value!r} is not a result backend djqueue has; "
            f"use one of {known}, or leave it unset to keep no results."
        ) from None


def backend_key(conf: Settings) -> tuple[object, ...]:
    """The settings a backend is built from: when they change, the app builds a new one."""
    return (
        conf.CELERY_RESULT_BACKEND, conf.broker_alias, conf.CELERY_CACHE_BACKEND, conf.result_expires,
    )


def backend_from_setting(conf: Settings) -> ResultBackend:
    """Build the backend that ``CELERY_RESULT_BACKEND`` asks for."""
    return backend_class(conf.CELERY_RESULT_BACKEND).from_conf(conf)
