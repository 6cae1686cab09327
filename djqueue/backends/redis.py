"""Results in Redis (``CELERY_RESULT_BACKEND = "redis://host:port/db"``, as Celery projects write
it; also ``rediss://`` and ``unix://``). Needs the ``redis`` package: ``pip install djqueue[redis]``.

Every result is one key, ``djqueue-task-meta-<task id>``, holding the record as JSON and expiring
by itself after ``CELERY_TASK_RESULT_EXPIRES`` seconds. A worker writes all the results of a round
with one pipelined round trip; a group is read with one ``MGET``. As with the cache backend,
results are not part of the worker's database transaction: a result can be visible a moment
before its message is acknowledged.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from .base import ResultBackend, ResultRecord

if TYPE_CHECKING:
    from typing import Self

    from ..conf import Settings

KEY_PREFIX = "djqueue-task-meta-"
SCHEMES = ("redis", "rediss", "unix")


def _encode(record: ResultRecord) -> str:
    data = dataclasses.asdict(record)
    if record.date_done is not None:
        data["date_done"] = record.date_done.isoformat()
    return json.dumps(data)


def _decode(text: bytes | None) -> ResultRecord | None:
    if text is None:
        return None
    data: dict[str, Any] = json.loads(text)
    if data.get("date_done"):
        data["date_done"] = datetime.datetime.fromisoformat(data["date_done"])
    return ResultRecord(**data)


class RedisBackend(ResultBackend):
    def __init__(self, url: str, using: str = "default", expires: float | None = None) -> None:
        super().__init__(using, expires)
        self.url = url
        # redis-py's connection pool is thread-safe and opens new connections after a fork.
        self.client = redis.Redis.from_url(url)

    @classmethod
    def from_conf(cls, conf: Settings) -> Self:
        return cls(str(conf.CELERY_RESULT_BACKEND), using=conf.broker_alias,
                   expires=conf.result_expires)

    def store(self, records: Sequence[ResultRecord]) -> None:
        if not records:
            return
        latest = {KEY_PREFIX + record.task_id: _encode(record) for record in records}
        # Whole seconds, at least one: Redis expires keys by the second (or millisecond).
        expires = max(1, round(self.expires)) if self.expires else None
        with self.client.pipeline(transaction=False) as pipe:
            for key, value in latest.items():
                pipe.set(key, value, ex=expires)
            pipe.execute()

    def get(self, task_id: str) -> ResultRecord | None:
        return _decode(self.client.get(KEY_PREFIX + task_id))

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        if not task_ids:
            return {}
        values = self.client.mget([KEY_PREFIX + task_id for task_id in task_ids])
        return {task_id: record for task_id, value in zip(task_ids, values)
                if (record := _decode(value)) is not None}

    def forget(self, task_id: str) -> None:
        self.client.delete(KEY_PREFIX + task_id)

    def cleanup(self) -> int | None:
        return None  # every key was stored with its time to live
