"""Worker hosts against one PostgreSQL: ``python bench/hosts.py [--tasks 10000] [--runs 2]``
(as root: network namespaces).

Three hosts (tests/netns.py: network namespaces joined by veth pairs) and a private PostgreSQL
cluster (tests/pg_cluster.py) listening on this machine's end of each link. With 1, 2 and 3 hosts
in turn, one worker ``-c 2`` each: ``--tasks`` tasks sent as one group to idle workers, and the
time until the last one ran; from the lines the tasks write, how many ran twice or never.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.common import start_worker_process, stop_worker  # noqa: E402
from tests import netns  # noqa: E402
from tests.pg_cluster import manage, private_cluster, server_bindir  # noqa: E402

SEND = """
import time
from djqueue import group
from bench.tasks import noop
group(noop.s(i, time.time()) for i in range({count})).apply_async()
"""


def drain(server, hosts: list[netns.Host], count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        record = folder / "record"
        record.touch()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings"}
        with psycopg.connect(server.url, autocommit=True) as db:
            db.execute("DELETE FROM djqueue_message; DELETE FROM djqueue_taskresult")
        workers = []
        try:
            for n, host in enumerate(hosts):
                os.environ.update(env, DATABASE_URL=(
                    f"postgres://postgres@{host.address}:{server.port}/postgres"))
                workers.append(start_worker_process(  # bench.noop writes a line to BENCH_LOG
                    host.command(sys.executable, "manage.py", "celery", "worker", "-c", "2",
                                 "-n", f"host{n}@%h"), record))
            time.sleep(6)  # started and idle
            began = time.monotonic()
            manage(server.url, "shell", "-v0", "-c", SEND.format(count=count), env=env,
                   timeout=300)
            while record.read_bytes().count(b"\n") < count:
                if time.monotonic() - began > 600:
                    break
                time.sleep(0.05)
            seconds = time.monotonic() - began
            time.sleep(1)  # anything that would run twice
        finally:
            for worker in workers:
                stop_worker(worker)
        keys = [line.split()[0] for line in record.read_text().splitlines()]
    return {"tasks/s": count / seconds, "ran twice": len(keys) - len(set(keys)),
            "never ran": count - len(set(keys))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    options = parser.parse_args()
    why = netns.available()
    bindir = server_bindir()
    if why or bindir is None:
        raise SystemExit(why or "PostgreSQL's server programs are not installed")
    # A timeout's SIGTERM still removes the hosts and the cluster (the context managers' exits).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    results: dict[int, list[dict[str, float]]] = {1: [], 2: [], 3: []}
    with private_cluster(bindir) as server, netns.hosts(3) as hosts:
        server.serve([host.address for host in hosts], netns.network(hosts))
        manage(server.url, "migrate", "-v0", env={**os.environ,
                                                  "DJANGO_SETTINGS_MODULE": "bench.settings"})
        for _ in range(options.runs):  # the host counts take turns
            for count in results:
                results[count].append(drain(server, hosts[:count], options.tasks))
    print(f"{options.tasks:,} tasks, one worker -c 2 per host:")
    for count, runs in results.items():
        cells = " / ".join(f"{run['tasks/s']:,.0f}" for run in runs)
        twice = sum(run["ran twice"] for run in runs)
        never = sum(run["never ran"] for run in runs)
        print(f"  {count} host(s): {cells} tasks/s; ran twice {twice}, never ran {never}")


if __name__ == "__main__":
    main()
