"""Results in Django's cache framework (``CELERY_RESULT_BACKEND = "cache"``).

``CELERY_CACHE_BACKEND`` names the ``CACHES`` alias (default ``"default"``). Every result is one
cache entry that the cache itself drops after ``CELERY_TASK_RESULT_EXPIRES`` seconds. Use a cache
that all web and worker processes share (Redis, Memcached, the database cache): a per-process
cache such as ``LocMemCache`` would show workers' results to nobody.

Unlike the database backend, results written by a worker are not part of its database
transaction: a result can be visible a moment before its message is acknowledged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import BaseCache, caches

from ..exceptions import ImproperlyConfigured
from .base import ResultBackend, ResultRecord

if TYPE_CHECKING:
    from typing import Self

    from ..conf import Settings

KEY_PREFIX = "djqueue-task-meta-"


class CacheBackend(ResultBackend):
    def __init__(
        self, using: str = "default", expires: float | None = None, cache_alias: str = "default"
    ) -> None:
        super().__init__(using, expires)
        if cache_alias not in settings.CACHES:
            raise ImproperlyConfigured(
                f"CELERY_CACHE_BACKEND = {cache_alias!r} is not a key of CACHES "
                f"({', '.join(settings.CACHES)})"
            )
        self.cache_alias = cache_alias

    @classmethod
    def from_conf(cls, conf: Settings) -> Self:
        return cls(using=conf.broker_alias, expires=conf.result_expires,
                   cache_alias=conf.CELERY_CACHE_BACKEND)

    @property
    def cache(self) -> BaseCache:
        return caches[self.cache_alias]

    def store(self, records: Sequence[ResultRecord]) -> None:
        if records:
            latest = {KEY_PREFIX + r.task_id: dataclasses.asdict(r) for r in records}
            self.cache.set_many(latest, timeout=self.expires)

    def get(self, task_id: str) -> ResultRecord | None:
        data = self.cache.get(KEY_PREFIX + task_id)
        return ResultRecord(**data) if data else None

    def forget(self, task_id: str) -> None:
        self.cache.delete(KEY_PREFIX + task_id)

    def cleanup(self) -> int | None:
        return None  # each entry was stored with its time-out
