"""Result backends behind one small interface (:class:`~djqueue.backends.base.ResultBackend`)."""

from __future__ import annotations

from ..exceptions import ImproperlyConfigured
from .base import ResultBackend, ResultRecord
from .database import DatabaseBackend
from .disabled import DisabledBackend

__all__ = ["ResultBackend", "ResultRecord", "backend_from_setting", "BACKEND_NAMES"]

#: ``CELERY_RESULT_BACKEND`` values and the backend each selects.
BACKEND_NAMES: dict[str | None, type[ResultBackend]] = {
    None: DisabledBackend,
    "disabled": DisabledBackend,
    "database": DatabaseBackend,
    "django-db": DatabaseBackend,
}


def backend_from_setting(value: object, using: str) -> ResultBackend:
    """Build the backend that ``CELERY_RESULT_BACKEND = value`` asks for."""
    key = value.lower() if isinstance(value, str) else value
    try:
        cls = BACKEND_NAMES[key]  # type: ignore[index]
    except (KeyError, TypeError):
        known = ", ".join(repr(name) for name in BACKEND_NAMES if name)
        raise ImproperlyConfigured(
            f"CELERY_RESULT_BACKEND = {value!r} is not a result backend djqueue has; "
            f"use one of {known}, or leave it unset to keep no results."
        ) from None
    return cls(using=using)
