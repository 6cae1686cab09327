"""Soak: djqueue workers under faults, and what became of every task.

``python bench/soak.py [--quick] [--only kills|outages]``, from the repository root, with the
project's virtualenv, as root or a user that can run PostgreSQL's programs.

(i) kills: 20,000 tasks (every 5th acks_late; 2 ms each, every 4th 50 ms) on PostgreSQL
    (``BENCH_SOAK_URL``, default postgres://postgres@127.0.0.1:5432/bench_soak, dropped and
    created afresh), 3 workers x -c 2; every 1-3 s a kill -9 of a random worker main
    process (one time in three) or pool child. A killed worker is started again at once; so is
    one that died by itself, which is counted.
(ii) outages: 5,000 of the same tasks on a private PostgreSQL cluster (tests/pg_cluster.py),
    3 workers x -c 2; the server is stopped three times for more than twice the lease
    (DJQUEUE_WORKER_LOST_TIMEOUT 5 s, outages of 12 s), after 15%, 45% and 75% of the tasks began.

The workers are started first; the tasks are sent (one group) once all of them run. Each task
writes a line when it starts (bench.common.record_start), one file per worker process, so
executions are counted by the tasks themselves; results and leftover messages are read from the
database (where a trigger also keeps every result written). Per scenario: sent, executed, lost
(no final state, or a message still held), run twice (acks_late / not), WorkerLostError (and
those overwritten by a later SUCCESS), worker deaths not caused by the benchmark, wall time
(from the send to every task's final state). Without acks_late a task must never run twice;
with it, a run cut short runs again. ``--quick``: 3,000 and 1,000 tasks, outages of 6 s with a
2.5 s lease.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    DJQUEUE_WORKER, compile_checkout, read_starts, start_worker_process, tree,
)
from tests.pg_cluster import (  # noqa: E402
    OVERWRITTEN, RESULT_HISTORY, private_cluster, server_bindir,
)

URL = os.environ.get("BENCH_SOAK_URL", "postgres://postgres@127.0.0.1:5432/bench_soak")
WORKERS = 3
DEADLINE = 900  # seconds for a scenario to settle every task


def late(key: int) -> bool:
    return key % 5 == 0


def seconds(key: int) -> float:
    """Most tasks short enough to be sent to a pool child in batches, every 4th longer."""
    return 0.05 if key % 4 == 3 else 0.002


# The enqueue side: a process of its own with Django set up on the scenario's database.

def enqueue(count: int, ids_file: Path) -> None:
    """Empty tables (migrated) when ``count`` is 0; else send the tasks, their ids to a file."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from bench.tasks import soak, soak_late
    from djqueue import group
    from djqueue.models import Message, TaskResult, WorkerNode

    if not count:
        call_command("migrate", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {Message._meta.db_table}, {TaskResult._meta.db_table}, "
                           f"{WorkerNode._meta.db_table}")
        return
    sent = group((soak_late if late(i) else soak).s(i, seconds(i)) for i in range(count))
    ids_file.write_text(json.dumps([r.id for r in sent.apply_async()]))


# The driver.

@dataclass
class Worker:
    """One worker slot; each (re)start is a new process with its own start-record file."""

    index: int
    workdir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)  # pids the benchmark killed

    def start(self) -> None:
        log = self.workdir / f"starts-w{self.index}-{len(self.procs)}.log"
        self.procs.append(start_worker_process(
            [sys.executable, *DJQUEUE_WORKER, "-n", f"soak{self.index}-{len(self.procs)}@%h"],
            log))

    @property
    def proc(self) -> subprocess.Popen:
        return self.procs[-1]

    def death(self) -> str | None:
        """Why the current process ended by itself (None while it runs or when killed)."""
        code = self.proc.poll()
        if code is None or self.proc.pid in self.killed:
            return None
        out = self.workdir / f"starts-w{self.index}-{len(self.procs) - 1}.worker.log"
        errors = re.findall(r"^(\w+(?:Error|Exception)\b.*)$", out.read_text(errors="replace"),
                            re.MULTILINE)
        return f"status {code}: {errors[-1] if errors else 'no error logged'}"

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its pool children too
            except ProcessLookupError:
                pass
            proc.wait()


def query(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
        cursor = db.execute(sql)
        return cursor.fetchall() if cursor.description else []


def settled(url: str) -> int:
    try:
        return query(url, "SELECT count(*) FROM djqueue_taskresult "
                          "WHERE state IN ('SUCCESS', 'FAILURE')")[0][0]
    except Exception:  # noqa: BLE001 - the server may be down (an outage)
        return -1


def started(workdir: Path) -> int:
    """Task starts so far (lines in the start records)."""
    return sum(log.read_bytes().count(b"\n") for log in workdir.glob("starts-*.log")
               if not log.name.endswith(".worker.log"))


def executed(workdir: Path) -> collections.Counter[int]:
    return collections.Counter(key for log in workdir.glob("starts-*.log")
                               if not log.name.endswith(".worker.log")
                               for key, _, _ in read_starts(log))


def run_scenario(url: str, count: int, lease: float, fault, workdir: Path) -> dict[str, object]:
    """Enqueue ``count`` tasks at ``url``, run the workers, call ``fault(workers, progress)``
    (``progress()``: the share of ``count`` started so far) until every task is settled, and
    count."""
    env = {"DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "bench.settings",
           "DJQUEUE_WORKER_LOST_TIMEOUT": str(lease)}
    os.environ.update(env)  # what start_worker_process gives the workers
    ids_file = workdir / "ids.json"

    def send(number: int) -> None:
        subprocess.run([sys.executable, __file__, "--enqueue", str(number), str(ids_file)],
                       cwd=ROOT, check=True)

    send(0)
    query(url, RESULT_HISTORY + "TRUNCATE result_history;")  # results as they were written
    workers = [Worker(i, workdir) for i in range(WORKERS)]
    deaths: list[str] = []
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 60
        while query(url, "SELECT count(*) FROM djqueue_worker")[0][0] < WORKERS:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.2)
        began = time.monotonic()
        send(count)
        last_report = time.monotonic()
        while (done := settled(url)) < count and time.monotonic() - began < DEADLINE:
            for worker in workers:
                if (why := worker.death()) is not None:
                    deaths.append(f"w{worker.index}: {why}")
                    print(f"  worker w{worker.index} died by itself ({why}); restarted",
                          file=sys.stderr)
                    worker.start()
            fault(workers, lambda: started(workdir) / count)
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                print(f"  {time.monotonic() - began:.0f} s: {max(done, 0):,} of {count:,} "
                      "settled", file=sys.stderr)
            time.sleep(0.2)
        wall = time.monotonic() - began
        time.sleep(1)  # a run still going on, were there one, is counted
    finally:
        for worker in workers:
            worker.stop_all()
    ids = json.loads(ids_file.read_text())
    results = dict(((task_id, (state, result or "")) for task_id, state, result in query(
        url, "SELECT task_id, state, result FROM djqueue_taskresult")))
    held = {task_id for (task_id,) in query(url, "SELECT task_id FROM djqueue_message WHERE state "
                                                 "IN ('ready', 'reserved', 'started')")}
    runs = executed(workdir)
    overwritten = {task_id for (task_id,) in query(url, OVERWRITTEN)}
    figures = collections.Counter()
    for key, task_id in enumerate(ids):
        kind = "late" if late(key) else "plain"
        state, result = results.get(task_id, ("PENDING", ""))
        figures[f"sent {kind}"] += 1
        figures[f"executed {kind}"] += runs[key]
        figures[f"twice {kind}"] += runs[key] > 1
        figures[f"lost {kind}"] += state not in ("SUCCESS", "FAILURE") or task_id in held
        figures[f"worker lost {kind}"] += state == "FAILURE" and "WorkerLostError" in result
        figures[f"other failure {kind}"] += state == "FAILURE" and "WorkerLostError" not in result
        figures[f"overwritten {kind}"] += task_id in overwritten
    return {"figures": figures, "deaths": deaths, "wall": wall}


def kills_scenario(count: int, workdir: Path, rng: random.Random) -> dict[str, object]:
    lease = 6.0
    kills = collections.Counter()
    next_kill = 0.0

    def fault(workers: list[Worker], progress) -> None:
        nonlocal next_kill
        if time.monotonic() < next_kill:
            return
        next_kill = time.monotonic() + rng.uniform(1.0, 3.0)
        worker = rng.choice([w for w in workers if w.proc.poll() is None] or workers)
        children = tree(worker.proc.pid)[1:]
        if worker.proc.poll() is None and (not children or rng.random() < 1 / 3):
            worker.killed.add(worker.proc.pid)
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait()
            kills["worker main processes"] += 1
            worker.start()
        elif children:
            try:
                os.kill(rng.choice(children), signal.SIGKILL)
                kills["pool children"] += 1
            except ProcessLookupError:
                pass

    fresh_database(URL)
    report = run_scenario(URL, count, lease, fault, workdir)
    report["title"] = (f"(i) kill -9 every 1-3 s ({kills['worker main processes']} of a worker "
                       f"main process, {kills['pool children']} of a pool child); PostgreSQL, "
                       f"{WORKERS} workers x -c 2, lease {lease:g} s")
    return report


def outages_scenario(count: int, workdir: Path, quick: bool) -> dict[str, object]:
    lease, down = (2.5, 6.0) if quick else (5.0, 12.0)
    bindir = server_bindir()
    if bindir is None:
        return {"title": "(ii) outages: skipped, no PostgreSQL server binaries (initdb, pg_ctl)"}
    outages: list[float] = []
    with private_cluster(bindir) as server:
        def fault(workers: list[Worker], progress) -> None:
            if len(outages) < 3 and progress() >= (0.15, 0.45, 0.75)[len(outages)]:
                began = time.monotonic()
                server.stop()
                time.sleep(down)
                server.start()
                outages.append(time.monotonic() - began)

        report = run_scenario(server.url, count, lease, fault, workdir)
    lengths = ", ".join(f"{s:.1f}" for s in outages)
    report["title"] = (f"(ii) {len(outages)} PostgreSQL outages of {lengths} s, lease {lease:g} s; "
                       f"private cluster, {WORKERS} workers x -c 2")
    return report


def fresh_database(url: str) -> None:
    """Drop and create the soak's database: its schema is then the checkout's own, whatever
    revision ran the soak before (a newer one may have added columns an older one cannot fill)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')


def show(report: dict[str, object]) -> None:
    print(report["title"])
    if "figures" not in report:
        return
    f = report["figures"]

    def both(what: str) -> str:
        return (f"{f[what + ' late'] + f[what + ' plain']:,} "
                f"(acks_late {f[what + ' late']:,}, not {f[what + ' plain']:,})")

    print(f"  sent             {both('sent')}")
    print(f"  executed         {both('executed')}")
    print(f"  lost             {both('lost')}")
    print(f"  run twice        {both('twice')}")
    print(f"  WorkerLostError  {both('worker lost')}")
    print(f"  WorkerLostError overwritten by SUCCESS  {both('overwritten')}")
    if f["other failure late"] + f["other failure plain"]:
        print(f"  other failures   {both('other failure')}")
    print(f"  worker deaths not caused by the benchmark: {len(report['deaths'])}")
    for death in collections.Counter(report["deaths"]).most_common(5):
        print(f"    {death[1]} x {death[0]}")
    print(f"  wall time        {report['wall']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 and 1,000 tasks")
    parser.add_argument("--only", choices=["kills", "outages"])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--enqueue", nargs=2, metavar=("COUNT", "IDS_FILE"),
                        help=argparse.SUPPRESS)  # the enqueue side, run by the driver
    args = parser.parse_args()
    if args.enqueue:
        enqueue(int(args.enqueue[0]), Path(args.enqueue[1]))
        return
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    compile_checkout()
    revision = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip() or "(no git)"
    print(f"soak: djqueue {revision}, {'quick' if args.quick else 'full'} run, seed {seed}")
    reports = []
    if args.only in (None, "kills"):
        with tempfile.TemporaryDirectory() as tmp:
            reports.append(kills_scenario(3000 if args.quick else 20000, Path(tmp),
                                          random.Random(seed)))
        show(reports[-1])
    if args.only in (None, "outages"):
        with tempfile.TemporaryDirectory() as tmp:
            reports.append(outages_scenario(1000 if args.quick else 5000, Path(tmp), args.quick))
        show(reports[-1])


if __name__ == "__main__":
    main()
