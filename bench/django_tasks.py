"""Django's ``@task`` through djqueue against django-tasks-db, and ``async def`` tasks.

    python bench/django_tasks.py [--runs 3] [--tasks 2000] [--postgres URL] [--sqlite URL]
                                 [--conn-max-age SECONDS]

Needs Django 6: run with any Python, it installs (on first use) and re-runs itself in
``bench/.venv-django-tasks`` (git-ignored; Python 3.12, Django 6, django-tasks-db, this
checkout). For each database (PostgreSQL at ``BENCH_DJTASKS_URL``, default
``postgres://postgres@127.0.0.1:5432/bench_djtasks``, created when missing; SQLite at
``/tmp/bench-djtasks.sqlite3``), three take turns, one run each, ``--runs`` times: the same
function (``return i``) as Django's ``@task`` through djqueue, as Django's ``@task`` through
django-tasks-db's ``DatabaseBackend``, and as djqueue's own ``@task`` (what djqueue's worker does
with a task of its own: the ceiling of the first row).

- enqueue: ``--tasks`` calls of ``task.enqueue(i)`` (djqueue's ``@task``: ``delay(i)``), one by
  one, each its own transaction;
- drain: those tasks, parked in the queue ``hold``, are released at once (one ``UPDATE``) to
  workers that are already up and idle: djqueue's ``manage.py celery worker -c 2`` (prefork) and
  two django-tasks-db ``manage.py db_worker`` processes (one task at a time each), both looking
  every 0.05 s; timed from the release until the database says every task finished. Every
  process has the project's settings (``DEBUG = False``; ``CONN_MAX_AGE`` Django's 0 unless
  ``--conn-max-age`` says otherwise: with 0, ``db_worker`` closes its connection after each task
  and opens a new one for the next, as Django does after each request).

Then the async figure: 1,000 ``async def`` tasks that each ``await asyncio.sleep(0.1)``
(``@task(async_concurrency=250)``), released at once to one djqueue worker ``-c 2``; timed until
all finished. Medians are printed, with djqueue's ratios to django-tasks-db.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv-django-tasks"
REQUIREMENTS = ["-e", f"{ROOT}[postgres]", "Django>=6.0,<6.2", "django-tasks-db>=0.13,<0.14"]
SETTINGS = "bench.django_tasks_settings"
#: What takes turns: Django's @task on each backend, and the same function as a djqueue @task
#: (the ceiling of the first: what djqueue's worker does with a task of its own).
SYSTEMS = ("djqueue", "django-tasks-db", "djqueue @task")


def bench_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        found = next((p for p in (shutil.which("python3.12"), *sorted(
            Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")).glob(
                "versions/3.1[2-9]*/bin/python3"))) if p and _runs(p)), None)
        if found is None:
            sys.exit("Django 6 needs Python >= 3.12; none found (python3.12 or pyenv)")
        print(f"Installing Django 6 and django-tasks-db into {VENV} ...", file=sys.stderr)
        subprocess.run([str(found), "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
    return python


def _runs(python: str | Path) -> bool:
    """Whether ``python`` starts (a pyenv shim for a version not selected does not)."""
    return subprocess.run([str(python), "-c", ""], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--postgres", default=os.environ.get(
        "BENCH_DJTASKS_URL", "postgres://postgres@127.0.0.1:5432/bench_djtasks"))
    parser.add_argument("--sqlite", default="sqlite:////tmp/bench-djtasks.sqlite3")
    parser.add_argument("--conn-max-age", type=float, help=(
        "CONN_MAX_AGE for every process (default: the project's, Django's 0: db_worker then "
        "connects anew for each task; djqueue's worker keeps its connections either way)"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a database's turns, in the venv
    options = parser.parse_args()
    if options.one:
        print(json.dumps(measure(options.one, options.runs, options.tasks)))
        return
    python = bench_python()
    if options.conn_max_age is not None:
        os.environ["BENCH_CONN_MAX_AGE"] = str(options.conn_max_age)
    for title, url in (("PostgreSQL", options.postgres), ("SQLite", options.sqlite)):
        if url.startswith("postgres"):
            create_database(python, url)
        out = subprocess.run(
            [str(python), str(Path(__file__)), "--one", url, "--runs", str(options.runs),
             "--tasks", str(options.tasks)],
            cwd=ROOT, env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": SETTINGS},
            check=True, capture_output=True, text=True)
        report(title, json.loads(out.stdout.strip().splitlines()[-1]), options.tasks)


def create_database(python: Path, url: str) -> None:
    script = ("import sys, psycopg; base, _, name = sys.argv[1].rpartition('/');"
              "c = psycopg.connect(base + '/postgres', autocommit=True);"
              "exists = c.execute('select 1 from pg_database where datname=%s', [name]).fetchone();"
              "exists or c.execute(f'create database \"{name}\"')")
    subprocess.run([str(python), "-c", script, url], check=True)


def report(title: str, figures: dict[str, list[float]], tasks: int) -> None:
    med = {key: statistics.median(values) for key, values in figures.items()}
    print(f"\n{title}, {tasks} tasks, median of {len(figures['djqueue_enqueue'])} interleaved runs,"
          f" CONN_MAX_AGE {os.environ.get('BENCH_CONN_MAX_AGE', 'of the project (0)')}")
    print(f"  {'':16} {'enqueue/s':>10} {'drain/s':>10}")
    for system in SYSTEMS:
        print(f"  {system:16} {med[system + '_enqueue']:>10.0f} {med[system + '_drain']:>10.0f}")
    print(f"  djqueue / django-tasks-db: enqueue {med['djqueue_enqueue'] / med['django-tasks-db_enqueue']:.2f}x,"
          f" drain {med['djqueue_drain'] / med['django-tasks-db_drain']:.1f}x")
    print(f"  Django @task / djqueue @task through djqueue: drain "
          f"{med['djqueue_drain'] / med['djqueue @task_drain']:.2f}x")
    print(f"  async: 1,000 tasks of asyncio.sleep(0.1), one worker -c 2: all finished in "
          f"{med['async_seconds']:.2f} s (runs: {', '.join(f'{s:.2f}' for s in figures['async_seconds'])})")


# In the venv, with DJANGO_SETTINGS_MODULE and DATABASE_URL set. Django and the tasks are imported
# inside these functions: the outer run (any Python, any Django or none) never imports them.

def measure(url: str, runs: int, tasks: int) -> dict[str, list[float]]:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    figures: dict[str, list[float]] = {}
    for _ in range(runs):
        for system in SYSTEMS:
            enqueue, drain = one_run(system, tasks)
            figures.setdefault(f"{system}_enqueue", []).append(enqueue)
            figures.setdefault(f"{system}_drain", []).append(drain)
        figures.setdefault("async_seconds", []).append(async_run(1000))
    return figures


def _clear() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("djqueue_message", "djqueue_taskresult", "django_tasks_database_dbtaskresult"):
            cursor.execute(f"DELETE FROM {table}")


def _count(sql: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def _workers(system: str) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "DJQUEUE_POLLING_INTERVAL": "0.05"}
    manage = [sys.executable, "manage.py"]
    if system != "django-tasks-db":
        commands = [[*manage, "celery", "worker", "-c", "2", "-l", "warning"]]
    else:
        commands = [[*manage, "db_worker", "--backend", "db", "--interval", "0.05",
                     "--no-startup-delay", "--no-reload", "--worker-id", f"bench-{i}"]
                    for i in range(2)]
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for command in commands]
    time.sleep(3)  # up and idle: what is timed is the drain, not the start
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _release_and_wait(release: str, done: str, count: int, procs) -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(release)
    while _count(done) < count:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker exited during the drain")
        time.sleep(0.01)
    return time.perf_counter() - started


def one_run(system: str, tasks: int) -> tuple[float, float]:
    from bench.django_tasks_app import noop_celery_style, noop_db, noop_djqueue

    _clear()
    send = {"djqueue": noop_djqueue.enqueue, "django-tasks-db": noop_db.enqueue,
            "djqueue @task": noop_celery_style.delay}[system]
    started = time.perf_counter()
    for i in range(tasks):
        send(i)
    enqueue = tasks / (time.perf_counter() - started)
    procs = _workers(system)
    try:
        if system != "django-tasks-db":
            seconds = _release_and_wait(
                "UPDATE djqueue_message SET queue = 'celery' WHERE queue = 'hold'",
                "SELECT count(*) FROM djqueue_taskresult WHERE state = 'SUCCESS'", tasks, procs)
        else:
            seconds = _release_and_wait(
                "UPDATE django_tasks_database_dbtaskresult SET queue_name = 'default'"
                " WHERE queue_name = 'hold'",
                "SELECT count(*) FROM django_tasks_database_dbtaskresult WHERE status = 'SUCCESSFUL'",
                tasks, procs)
    finally:
        _stop(procs)
    return enqueue, tasks / seconds


def async_run(count: int) -> float:
    from djqueue import group

    from bench.django_tasks_app import nap

    _clear()
    group(nap.s(0.1) for _ in range(count)).apply_async()
    procs = _workers("djqueue")
    try:
        return _release_and_wait(
            "UPDATE djqueue_message SET queue = 'celery' WHERE queue = 'hold'",
            "SELECT count(*) FROM djqueue_taskresult WHERE state = 'SUCCESS'", count, procs)
    finally:
        _stop(procs)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
