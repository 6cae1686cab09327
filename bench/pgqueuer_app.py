"""The benchmark's task on pgqueuer, and its worker (run in bench/.venv-pgqueuer).

``python -m bench.pgqueuer_app`` is the worker: two consumer processes, this one and one child it
starts first thing (before the heavy imports, so that both start up side by side). Each runs a
``QueueManager`` over its own asyncpg connection the way ``pgq run`` does (``pgqueuer.run`` on
uvloop) with pgqueuer's defaults: batches of 10 jobs, no cap on jobs in flight, LISTEN/NOTIFY on.
SIGTERM stops both (the parent passes it on to the child).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

DSN = os.environ.get("BENCH_PGQUEUER_URL", "postgres://postgres@127.0.0.1:5432/bench_pgqueuer")
ENTRYPOINT = "bench.noop"


def payload(key: int, enqueued_at: float) -> bytes:
    return f"{key} {enqueued_at!r}".encode()


def create_manager():
    """The factory ``pgqueuer.run`` (and ``pgq run bench.pgqueuer_app:create_manager``) takes."""
    from contextlib import asynccontextmanager

    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

    from .common import record_start

    @asynccontextmanager
    async def manager():
        connection = await asyncpg.connect(DSN)
        try:
            qm = QueueManager(Queries(AsyncpgDriver(connection)))

            @qm.entrypoint(ENTRYPOINT)
            async def noop(job: Job) -> None:
                # pgqueuer has no return values: the job's payload is the task's arguments, and
                # what is kept of a finished job is a row in pgqueuer_log (status successful)
                key, enqueued_at = job.payload.split()
                record_start(int(key), float(enqueued_at))

            yield qm
        finally:
            await connection.close()

    return manager()


def consume(child: subprocess.Popen | None) -> None:
    import asyncio
    import logging

    import pgqueuer
    import uvloop

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pgqueuer").setLevel(logging.WARNING)

    async def main() -> None:
        shutdown = asyncio.Event()

        def stop() -> None:
            shutdown.set()
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
        await pgqueuer.run(create_manager, shutdown=shutdown)

    uvloop.run(main())
    if child is not None:
        child.wait()


if __name__ == "__main__":
    consume(None if "--child" in sys.argv else
            subprocess.Popen([sys.executable, "-m", "bench.pgqueuer_app", "--child"]))
