"""Where an idle worker tree's memory goes: ``python bench/memory_floor.py [--runs 3]``.

Each row is a tree of three processes (a main process and two forked children, as ``-c 2``
makes), measured idle, median of ``--runs``:

- ``Celery 5 + Redis (-c 2)``: the bare Celery worker of bench/celery_app.py (bench/.venv-celery,
  installed on first use as by ``run.py --compare celery``);
- ``Django project, no queue``: the example project without djqueue (bench/celery_django_settings.py)
  set up and connected to PostgreSQL, then forked as djqueue's prefork pool forks (connection
  closed, ``gc.freeze()``): no task queue at all, only what any Django worker tree carries;
- ``Django project + djqueue imported``: the same with bench/settings.py and djqueue's worker
  modules imported, nothing started: what djqueue's code adds;
- ``djqueue worker (-c 2)``: ``manage.py celery worker -c 2`` on PostgreSQL.

The two middle rows are not workers; they hold still so that the floor under a Django worker's
resident-memory sum can be read. Figures are idle trees (bench/run.py reports the peak during a
drain, 2 to 3 MB more for each system).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import CELERY_WORKER, DJQUEUE_WORKER, compile_checkout, tree, tree_memory

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_djqueue")
SETTLE = 3.0  # seconds an idle tree is left before it is measured


def hold(settings: str, worker_modules: bool) -> None:
    """The child process of a floor row: set Django up, fork two children, wait to be killed."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    import gc

    import django

    django.setup()
    from django.db import connection, connections

    connection.ensure_connection()
    if worker_modules:
        import djqueue.management.commands.celery
        import djqueue.worker.loop  # noqa: F401
    connections.close_all()
    gc.freeze()
    for _ in range(2):
        if os.fork() == 0:
            signal.pause()
            os._exit(0)
    connection.ensure_connection()
    signal.pause()


def measure(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(RSS sum, PSS sum) in MB of the tree started by ``args`` once it has three processes and
    has been left alone for SETTLE seconds."""
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(tree(proc.pid)) < 3:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not start three processes")
            time.sleep(0.05)
        time.sleep(SETTLE)
        rss, pss = tree_memory(proc.pid)
        return rss / 2**20, pss / 2**20
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def rows(runs: int) -> dict[str, list[tuple[float, float]]]:
    from bench.run import OTHERS, venv_python

    _, venv, requirements, _, _ = OTHERS["celery"]
    celery = venv_python(venv, requirements)
    here = [sys.executable, str(Path(__file__).resolve())]
    postgres = {"DATABASE_URL": POSTGRES}
    systems = {
        "Celery 5 + Redis (-c 2)": (
            [celery, *CELERY_WORKER], {"BENCH_LOG": os.devnull}),
        "Django project, no queue": (here + ["--hold", "bench.celery_django_settings"], postgres),
        "Django project + djqueue imported": (
            here + ["--hold", "bench.settings", "--worker-modules"], postgres),
        "djqueue worker (-c 2)": (
            [sys.executable, *DJQUEUE_WORKER],
            {**postgres, "DJANGO_SETTINGS_MODULE": "bench.settings"}),
    }
    found: dict[str, list[tuple[float, float]]] = {title: [] for title in systems}
    for _ in range(runs):  # interleaved, so that a noisy moment touches every row alike
        for title, (args, env) in systems.items():
            found[title].append(measure(args, env))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold", metavar="SETTINGS", help=argparse.SUPPRESS)
    parser.add_argument("--worker-modules", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.hold:
        hold(options.hold, options.worker_modules)
        return
    compile_checkout()
    found = rows(options.runs)
    print(f"idle trees of 3 processes, medians of {options.runs} runs\n")
    print(f"{'':36s}{'RSS sum MB':>12s}{'PSS sum MB':>12s}")
    for title, samples in found.items():
        rss = statistics.median(r for r, _ in samples)
        pss = statistics.median(p for _, p in samples)
        print(f"{title:36s}{rss:12.1f}{pss:12.1f}")


if __name__ == "__main__":
    main()
