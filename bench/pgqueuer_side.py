"""Runs the measurements against pgqueuer on PostgreSQL; prints one JSON line per run.

Started by bench/run.py with the interpreter of bench/.venv-pgqueuer. Creates the database of
BENCH_PGQUEUER_URL and installs pgqueuer's schema in it when they are missing (upgrades it when it
is there), so a machine with only PostgreSQL running is enough.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import uvloop
from pgqueuer import AsyncpgDriver, Queries

from bench.common import print_runs, start_worker_process
from bench.pgqueuer_app import DSN, ENTRYPOINT, payload


async def connect() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(DSN)
    except asyncpg.InvalidCatalogNameError:
        name = unquote(urlsplit(DSN).path.lstrip("/"))
        server = await asyncpg.connect(DSN, database="postgres")
        try:
            await server.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await server.close()
        return await asyncpg.connect(DSN)


class PgqueuerSystem:
    """The producer side: one asyncpg connection in autocommit (each enqueue its own
    transaction), driven from this synchronous harness by one uvloop event loop."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.connection = self.loop.run_until_complete(connect())
        self.queries = Queries(AsyncpgDriver(self.connection))
        if self.loop.run_until_complete(self.queries.schema_is_installed()):
            self.loop.run_until_complete(self.queries.upgrade())
        else:
            self.loop.run_until_complete(self.queries.install())

    def reset(self) -> None:
        self.loop.run_until_complete(self.queries.clear_queue())
        self.loop.run_until_complete(self.queries.clear_queue_log())
        self.loop.run_until_complete(self.queries.clear_statistics_log())

    def enqueue_one(self, key: int, enqueued_at: float) -> None:
        self.loop.run_until_complete(
            self.queries.enqueue(ENTRYPOINT, payload(key, enqueued_at))
        )

    def bulk_enqueue(self, count: int) -> None:
        # pgqueuer's batch path: lists of entrypoints, payloads and priorities, one statement
        self.loop.run_until_complete(self.queries.enqueue(
            [ENTRYPOINT] * count, [payload(i, 0.0) for i in range(count)], [0] * count
        ))

    def start_worker(self, log: Path) -> subprocess.Popen:
        return start_worker_process([sys.executable, "-m", "bench.pgqueuer_app"], log)


if __name__ == "__main__":
    print_runs(PgqueuerSystem(), int(sys.argv[1]))
