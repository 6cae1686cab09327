"""The benchmark: ``python bench/run.py [--runs 3] [--compare celery] [--compare celery-django]
[--compare pgqueuer] [--scale-out] [--baseline REV ...] [--mysql URL]``.

Runs djqueue on SQLite, on PostgreSQL and on MariaDB/MySQL (and, with ``--compare celery``,
Celery 5 on Redis; with ``--compare celery-django``, the same Celery app in a Django project;
with ``--compare pgqueuer``, pgqueuer on PostgreSQL; each in a virtualenv of its own under bench/,
created on first use) and prints the medians of ``--runs`` runs and the ratios. See bench/README.md for what is measured and
how.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.common import compile_checkout, median_of  # noqa: E402

# the systems --compare can add: row title, virtualenv, what is installed in it, side module, and
# which environment variables tell the side where to connect (each the value of an option)
OTHERS = {
    "celery": ("Celery 5 + Redis (-c 2)", ".venv-celery", ["celery[redis]>=5,<6"],
               "bench.celery_side", {"BENCH_REDIS_URL": "redis"}),
    "celery-django": ("Celery 5 + Redis, Django project (-c 2)", ".venv-celery-django",
                      ["celery[redis]>=5,<6", "Django>=5.2,<5.3", "django-environ>=0.11",
                       "psycopg[binary]>=3.1"],
                      "bench.celery_django_side",
                      {"BENCH_REDIS_URL": "redis", "DATABASE_URL": "postgres"}),
    "pgqueuer": ("pgqueuer PostgreSQL (2 procs)", ".venv-pgqueuer", ["pgqueuer[asyncpg]>=1,<2"],
                 "bench.pgqueuer_side", {"BENCH_PGQUEUER_URL": "pgqueuer"}),
}
OURS = "djqueue PostgreSQL (-c 2)"
MARIADB = "djqueue MariaDB (-c 2)"
COLUMNS = [
    ("single", "enqueue 1-by-1 /s", "{:,.0f}"),
    ("bulk", "bulk enqueue /s", "{:,.0f}"),
    ("drain", "drain /s", "{:,.0f}"),
    ("p50", "latency p50 ms", "{:.1f}"),
    ("p95", "latency p95 ms", "{:.1f}"),
    ("rss_mb", "worker RSS MB", "{:.0f}"),
    ("pss_mb", "worker PSS MB", "{:.0f}"),
]


def side(
    python: str, args: list[str], env: dict[str, str], cwd: Path = ROOT
) -> dict[str, float | None]:
    proc = subprocess.run(
        [python, *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    runs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return median_of(runs)


def venv_python(venv: str, requirements: list[str]) -> str:
    python = HERE / venv / "bin" / "python"
    if not python.exists():
        print(f"Installing {' '.join(requirements)} into bench/{venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    return str(python)


def baseline_tree(revision: str, number: int) -> Path:
    """A checkout of ``revision`` (bench/.baseline-N, git-ignored), with its bytecode written."""
    import compileall

    tree = HERE / f".baseline-{number}"
    if tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT,
                   check=True, capture_output=True)
    for name in ("djqueue", "example_project"):
        compileall.compile_dir(tree / name, quiet=1)
    compileall.compile_dir(tree / "bench", maxlevels=0, quiet=1)
    return tree


def database_beside(url: str, suffix: str) -> str:
    """The URL of a PostgreSQL database named like ``url``'s plus ``suffix``, created if missing
    (another revision may need another schema)."""
    import psycopg

    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/")) + suffix
    with psycopg.connect(url, dbname="postgres", autocommit=True) as server:
        if not server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            server.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path="/" + name))


def settle(url: str) -> None:
    """Write to disk what earlier runs left to write: a ``CHECKPOINT`` of the PostgreSQL server
    of ``url`` (a superuser's or ``pg_checkpoint``'s right; skipped, with a word, without it),
    then the kernel's dirty pages. One-by-one enqueue waits for a WAL flush per task, and a
    flush waits behind the writes a previous run's drain left: 1,000 commits ran at a median
    1,050/s right after such writes and 1,664/s after a settle (6 alternations)."""
    import psycopg

    try:
        # CHECKPOINT is the whole server's: asked through its maintenance database, which
        # exists before the first run creates the benchmark's own.
        with psycopg.connect(url, dbname="postgres", autocommit=True) as server:
            server.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege as exc:
        print(f"No CHECKPOINT between runs ({exc}): grant pg_checkpoint for steadier figures.",
              file=sys.stderr)
    os.sync()


def mysql_database(url: str) -> str:
    """``url``, its MySQL/MariaDB database created if missing."""
    import MySQLdb

    parts = urlsplit(url)
    server = MySQLdb.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                             user=unquote(parts.username or "root"),
                             password=unquote(parts.password or ""))
    try:
        name = unquote(parts.path.lstrip("/")).replace("`", "")
        server.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
    finally:
        server.close()
    return url


def table(rows: dict[str, dict[str, float | None]]) -> str:
    width = max(len(name) for name in rows) + 2
    lines = [" " * width + " | ".join(f"{title:>17}" for _, title, _ in COLUMNS)]
    for name, values in rows.items():
        cells = [
            f"{'n/a' if values.get(key) is None else fmt.format(values[key]):>17}"
            for key, _, fmt in COLUMNS
        ]
        lines.append(f"{name:<{width}}" + " | ".join(cells))
    return "\n".join(lines)


def ratios(ours: dict[str, float | None], theirs: dict[str, float | None]) -> str:
    def ratio(key: str, higher_is_better: bool) -> str:
        if ours.get(key) is None or theirs.get(key) is None:
            return "n/a"
        value = ours[key] / theirs[key] if higher_is_better else theirs[key] / ours[key]
        return f"{value:.2f}x"

    return (
        f"enqueue 1-by-1 {ratio('single', True)}, bulk enqueue {ratio('bulk', True)}, "
        f"drain {ratio('drain', True)}, "
        f"latency p50 {ours['p50']:.2f} vs {theirs['p50']:.2f} ms, "
        f"p95 {ours['p95']:.2f} vs {theirs['p95']:.2f} ms, "
        f"RSS {ours['rss_mb']:.0f} vs {theirs['rss_mb']:.0f} MB, "
        f"PSS {ours['pss_mb']:.0f} vs {theirs['pss_mb']:.0f} MB "
        "(ratios >1x: djqueue better)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare", choices=list(OTHERS), action="append", default=[],
                        help="also run this system (repeat for several)")
    parser.add_argument("--scale-out", action="store_true", help="also 8 vs 2 workers on PostgreSQL")
    parser.add_argument("--postgres", default=os.environ.get(
        "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_djqueue"))
    parser.add_argument("--sqlite", default="sqlite:////tmp/bench-djqueue.sqlite3")
    parser.add_argument("--mysql", default=os.environ.get(
        "BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/bench_djqueue"),
        help="djqueue's MariaDB/MySQL database (created when missing); '' leaves it out")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--pgqueuer", default=os.environ.get(
        "BENCH_PGQUEUER_URL", "postgres://postgres@127.0.0.1:5432/bench_pgqueuer"),
        help="pgqueuer's database (created, and its schema installed, when missing)")
    parser.add_argument("--baseline", metavar="REV", action="append", default=[],
                        help="also run djqueue as of this git revision on PostgreSQL (in a "
                        "database of its own), taking turns with the checkout: the before and "
                        "after of a change in one run (repeat for several)")
    options = parser.parse_args()
    compile_checkout()
    me = sys.executable
    others = [OTHERS[name] for name in dict.fromkeys(options.compare)]
    # title -> (python, arguments but the number of runs, environment)
    systems = {
        title: (venv_python(venv, requirements), ["-m", module],
                {name: getattr(options, option) for name, option in variables.items()}, ROOT)
        for title, venv, requirements, module, variables in others
    }
    systems[OURS] = (me, ["bench/djqueue_side.py"], {"DATABASE_URL": options.postgres}, ROOT)
    systems["djqueue SQLite (-c 2)"] = (me, ["bench/djqueue_side.py"],
                                        {"DATABASE_URL": options.sqlite}, ROOT)
    if options.mysql:
        systems[MARIADB] = (me, ["bench/djqueue_side.py"],
                            {"DATABASE_URL": mysql_database(options.mysql)}, ROOT)
    befores = []
    for number, revision in enumerate(dict.fromkeys(options.baseline), 1):
        before = f"djqueue PostgreSQL @{revision}"
        befores.append(before)
        systems[before] = (me, ["bench/djqueue_side.py"], {
            "DATABASE_URL": database_beside(options.postgres, f"_baseline{number}")},
            baseline_tree(revision, number))
    # One run of each system in turn, --runs times over: the speed of the development machines
    # drifts over minutes (other tenants), and a drift would otherwise favour whichever system
    # ran first. Every other round runs them in reverse order, and each run starts once the
    # previous one's writes are on disk (settle).
    found: dict[str, list[dict[str, float | None]]] = {title: [] for title in systems}
    turns = list(systems.items())
    for number in range(options.runs):
        for title, (python, args, env, cwd) in turns if number % 2 == 0 else turns[::-1]:
            settle(options.postgres)
            found[title].append(side(python, [*args, "1"], env, cwd))
    rows = {title: median_of(runs) for title, runs in found.items()}
    print(f"\nmedians of {options.runs} runs (tasks: see bench/README.md)\n")
    print(table(rows))
    for title, *_ in others:
        print(f"\ndjqueue PostgreSQL vs {title}: " + ratios(rows[OURS], rows[title]))
        if options.mysql:
            print(f"\ndjqueue MariaDB vs {title}: " + ratios(rows[MARIADB], rows[title]))
    for before in befores:
        print(f"\ndjqueue PostgreSQL vs {before}: " + ratios(rows[OURS], rows[before]))
    if options.scale_out:
        subprocess.run([me, "bench/scale_out.py"], cwd=ROOT, check=True,
                       env={**os.environ, "DATABASE_URL": options.postgres})


if __name__ == "__main__":
    main()
