"""Runs the measurements against Celery + Redis; prints one JSON line per run.

Started by bench/run.py with the interpreter of bench/.venv-celery.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis

from bench.celery_app import REDIS, noop
from bench.common import CELERY_WORKER, print_runs, start_worker_process


class CelerySystem:
    bulk_enqueue = None  # Celery sends a group one message at a time: no bulk path to measure

    def __init__(self) -> None:
        self.redis = redis.Redis.from_url(REDIS)

    def reset(self) -> None:
        self.redis.flushdb()

    def enqueue_one(self, key: int, enqueued_at: float) -> None:
        noop.delay(key, enqueued_at)

    def start_worker(self, log: Path) -> subprocess.Popen:
        return start_worker_process(
            [sys.executable, *CELERY_WORKER], log)


if __name__ == "__main__":
    print_runs(CelerySystem(), int(sys.argv[1]))
