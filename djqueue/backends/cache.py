"""Results in Django's cache framework (``CELERY_RESULT_BACKEND = "cache"`` or ``"django-cache"``,
or Celery's ``"cache+memcached://host:port/"``).

``CELERY_CACHE_BACKEND`` names the ``CACHES`` alias (default ``"default"``). With a
``cache+memcached://`` URL (servers separated by ``;``, as Celery writes them) the cache is Django's
``PyMemcacheCache`` on those servers, no ``CACHES`` entry needed (``pip install pymemcache``). Every result is one
cache entry that the cache itself drops after ``CELERY_TASK_RESULT_EXPIRES`` seconds. Use a cache
that all web and worker processes share (Redis, Memcached, the database cache): a per-process
cache such as ``LocMemCache`` would show workers' results to nobody.

Unlike the database backend, results written by a worker are not part of its database
transaction: a result can be visible a moment before its message is acknowledged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.cache.backends.memcached import PyMemcacheCache

from ..exceptions import ImproperlyConfigured
from .base import ResultBackend, ResultRecord

if TYPE_CHECKING:
    from typing import Self

    from ..conf import Settings

KEY_PREFIX = "djqueue-task-meta-"
MEMCACHED = "cache+memcached://"
#: Task ids longer than this, or with characters memcached refuses in a key (spaces, control
#: characters, non-ASCII), are stored under their SHA-256 instead.
PLAIN_KEY_LENGTH = 200


def cache_key(task_id: str) -> str:
    if len(task_id) <= PLAIN_KEY_LENGTH and task_id.isascii() and task_id.isprintable() \
            and " " not in task_id:
        return KEY_PREFIX + task_id
    return KEY_PREFIX + "sha256-" + hashlib.sha256(task_id.encode(errors="replace")).hexdigest()


class CacheBackend(ResultBackend):
    def __init__(
        self, using: str = "default", expires: float | None = None, cache_alias: str = "default",
        url: str | None = None,
    ) -> None:
        super().__init__(using, expires)
        self.url = url
        if url is not None:
            servers = [s for s in url.removeprefix(MEMCACHED).strip("/").split(";") if s]
            if not url.startswith(MEMCACHED) or not servers:
                raise ImproperlyConfigured(
                    f"CELERY_RESULT_BACKEND = {url!r}: write {MEMCACHED}host:port/ (servers "
                    "separated by ';')")
            self.servers = servers
            self._local = threading.local()  # a memcached client per thread, as Django keeps
        elif cache_alias not in settings.CACHES:
            raise ImproperlyConfigured(
                f"CELERY_CACHE_BACKEND = {cache_alias!r} is not a key of CACHES "
                f"({', '.join(settings.CACHES)})"
            )
        self.cache_alias = cache_alias

    @classmethod
    def from_conf(cls, conf: Settings) -> Self:
        backend = str(conf.CELERY_RESULT_BACKEND)
        return cls(using=conf.broker_alias, expires=conf.result_expires,
                   cache_alias=conf.CELERY_CACHE_BACKEND,
                   url=backend if "://" in backend else None)

    @property
    def cache(self) -> BaseCache:
        if self.url is None:
            return caches[self.cache_alias]
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = PyMemcacheCache(self.servers, {})
        return cache

    def store(self, records: Sequence[ResultRecord]) -> None:
        if records:
            latest = {cache_key(r.task_id): dataclasses.asdict(r) for r in records}
            self.cache.set_many(latest, timeout=self.expires)

    def get(self, task_id: str) -> ResultRecord | None:
        data = self.cache.get(cache_key(task_id))
        return ResultRecord(**data) if data else None

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        keys = {cache_key(task_id): task_id for task_id in task_ids}
        found = self.cache.get_many(list(keys))
        return {keys[key]: ResultRecord(**data) for key, data in found.items() if data}

    def forget(self, task_id: str) -> None:
        self.cache.delete(cache_key(task_id))

    def cleanup(self) -> int | None:
        return None  # each entry was stored with its time-out
