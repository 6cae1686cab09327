"""Runs the measurements against Celery + Redis; prints one JSON line per run.

Started by bench/run.py with the interpreter of bench/.venv-celery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

from bench.celery_app import REDIS, noop
from bench.common import run_once

ROOT = Path(__file__).resolve().parent.parent


class CelerySystem:
    bulk_enqueue = None  # Celery sends a group one message at a time: no bulk path to measure

    def __init__(self) -> None:
        self.redis = redis.Redis.from_url(REDIS)

    def reset(self) -> None:
        self.redis.flushdb()

    def enqueue_one(self, key: int, enqueued_at: float) -> None:
        noop.delay(key, enqueued_at)

    def start_worker(self, log: Path) -> subprocess.Popen:
        with log.with_suffix(".worker.log").open("ab") as output:
            return subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-c", "2",
                 "-P", "prefork", "-l", "warning", "--without-gossip", "--without-mingle",
                 "--without-heartbeat"],
                cwd=ROOT, env={**os.environ, "BENCH_LOG": str(log)}, start_new_session=True,
                stdout=output, stderr=subprocess.STDOUT,
            )


if __name__ == "__main__":
    system = CelerySystem()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(int(sys.argv[1])):
            print(json.dumps(run_once(system, Path(tmp))), flush=True)
