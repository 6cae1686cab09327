"""Shared fixtures, and the tiers every test is sorted into. The database vendor comes from
DATABASE_URL (see scripts/test)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from pathlib import Path

import croniter  # noqa: F401 - imported here: its first import runs `file` in a subprocess
import pytest
from django.db import connection

from djqueue.client.base import app

from .pg_cluster import PrivatePostgres, private_cluster, server_bindir
from .mysql_server import PrivateMariaDB, private_server, server_installed

ROOT = Path(__file__).resolve().parent.parent


# Tiers. At collection every test gets one tier and one vendor scope as markers, so that each pass
# of scripts/test selects with -m (README, "Tests: tiers and passes"). They are derived, not only
# declared: a test nobody marked still gets both, so no selection can leave it out.
#
#   process         starts real processes: workers, beat, supervisord, a PostgreSQL cluster,
#                   Chromium, ``manage.py`` in a subprocess. A test is in this tier when it uses
#                   one of PROCESS_FIXTURES or is marked ``@pytest.mark.process``.
#   fast            everything else: in-process only. A fast test that starts a process anyway
#                   fails, saying to mark it (see ``_fast_tier_starts_no_process``).
#
#   per_vendor      uses the test database (pytest-django's django_db marker or DATABASE_FIXTURES):
#                   what it checks may differ between PostgreSQL and SQLite, so it runs on each.
#   vendor_neutral  uses no database, or is marked so: its subject is not SQL (the admin in a
#                   browser, supervisord), and the SQL it runs is checked per vendor elsewhere.
#
#   django_line     (explicit only) a process test whose outcome rests on Django's own code
#                   rather than djqueue's or the operating system's: the worker's start-up
#                   through manage.py and its system checks, connections kept across a fork and
#                   opened again after a database error. The other process tests run on the
#                   newest Django line only; these run on every line.

PROCESS_FIXTURES = frozenset(
    {"start_worker", "start_beat", "worker_env", "private_postgres", "private_mariadb",
     "supervisor", "browser"})
DATABASE_FIXTURES = frozenset({"db", "transactional_db", "django_db_reset_sequences",
                               "django_db_serialized_rollback", "live_server"})
TIERS = ("fast", "process")
VENDOR_SCOPES = ("per_vendor", "vendor_neutral")


def tier_problems(item: pytest.Item) -> list[str]:
    """Add the tier and vendor-scope markers ``item`` lacks; say what contradicts itself."""
    fixtures = set(getattr(item, "fixturenames", ()))
    declared = {m.name for m in item.iter_markers()}
    problems = []
    starts_processes = bool(fixtures & PROCESS_FIXTURES)
    if "fast" in declared and ("process" in declared or starts_processes):
        problems.append(f"marked fast but starts processes ({sorted(fixtures & PROCESS_FIXTURES)}"
                        " or @pytest.mark.process)")
    tier = "process" if "process" in declared or starts_processes else "fast"
    if set(VENDOR_SCOPES) <= declared:
        problems.append("marked both per_vendor and vendor_neutral")
    if "vendor_neutral" in declared:
        scope = "vendor_neutral"
    elif "per_vendor" in declared or "django_db" in declared or fixtures & DATABASE_FIXTURES:
        scope = "per_vendor"
    else:
        scope = "vendor_neutral"
    if "django_line" in declared and tier != "process":
        problems.append("marked django_line but not in the process tier (fast tests already run"
                        " on every Django line)")
    for name in (tier, scope):
        if name not in declared:
            item.add_marker(name)
    return problems


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = [f"{item.nodeid}: {problem}" for item in items for problem in tier_problems(item)]
    untiered = [item.nodeid for item in items
                if sum(item.get_closest_marker(t) is not None for t in TIERS) != 1
                or sum(item.get_closest_marker(v) is not None for v in VENDOR_SCOPES) != 1]
    problems += [f"{nodeid}: not exactly one tier and one vendor scope" for nodeid in untiered]
    if problems:
        raise pytest.UsageError("tests/conftest.py, tiers:\n  " + "\n  ".join(problems))


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_process(request: pytest.FixtureRequest,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A test of the fast tier that starts a process fails and says how to fix it, so the fast
    tier stays fast and a process test cannot hide in it (nor miss a process pass)."""
    if request.node.get_closest_marker("process") is not None:
        return

    def refuse(how: str) -> Callable[..., Any]:
        def refused(*args: object, **kwargs: object) -> Any:
            pytest.fail(f"{request.node.nodeid} is in the fast tier but starts a process ({how}"
                        ", see the traceback): mark it @pytest.mark.process (tests/conftest.py,"
                        " 'Tiers')")
        return refused

    import _posixsubprocess

    monkeypatch.setattr(subprocess, "_fork_exec", refuse("subprocess"))  # subprocess's own copy
    monkeypatch.setattr(_posixsubprocess, "fork_exec", refuse("a spawned process"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(f"os.{name}"))


def _running_children() -> dict[int, str]:
    """This process's children that are still running (not zombies), from /proc: pid -> name."""
    me, found = str(os.getpid()), {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        command, _, rest = text.partition(" (")[2].rpartition(") ")
        fields = rest.split()  # state, ppid, ...
        if len(fields) > 1 and fields[1] == me and fields[0] not in ("Z", "X"):
            found[int(stat.parent.name)] = command
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Every test ends what it started: tests run side by side (pytest-xdist), and a leftover
    worker would take the next test's messages from the test database. One left running fails
    the test, and is killed (with its process group when it leads one)."""
    result = yield
    if item.get_closest_marker("process") is not None and Path("/proc/self/stat").exists():
        left = _running_children()
        for pid in left:
            try:
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(
                    pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if left:
            raise AssertionError(f"{item.nodeid} left processes running (killed now): "
                                 + ", ".join(f"{pid} {name}" for pid, name in left.items()))
    return result


def _utf8_safe(value: Any) -> Any:
    """``value`` with every string that UTF-8 cannot encode (a lone surrogate) escaped."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode(errors="backslashreplace").decode()
        return value
    if isinstance(value, dict):
        return {key: _utf8_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_utf8_safe(item) for item in value)
    return value


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(config: pytest.Config, report: Any) -> Iterator[Any]:
    """pytest-xdist sends each report from its worker as UTF-8: tests/test_encoding.py logs lone
    surrogates on purpose, and a captured log holding one stopped the worker ("strings must be
    utf-8 encodable") with the rest of its tests unrun."""
    data = yield
    return _utf8_safe(data)


def pytest_report_header(config: pytest.Config) -> str:
    url = os.environ.get("DATABASE_URL") or "sqlite (default)"
    import django

    selection = f", -m {config.option.markexpr!r}" if config.option.markexpr else ""
    return f"djqueue tests: Django {django.get_version()}, DATABASE_URL={url}{selection}"


@pytest.fixture(autouse=True)
def _reset_conf() -> Iterator[None]:
    yield
    app.conf.reset()


def database_url() -> str:
    """A URL for the test database, for processes started by a test."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    if connection.vendor == "postgresql":
        user, host, port = settings["USER"], settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
        password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
        return f"postgres://{user}{password}@{host}:{port}/{settings['NAME']}"
    if connection.vendor == "mysql":
        user, host = settings["USER"], settings["HOST"] or "127.0.0.1"
        port = settings["PORT"] or 3306
        password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
        return f"mysql://{user}{password}@{host}:{port}/{settings['NAME']}"
    raise RuntimeError(f"no URL for {connection.vendor}")


class WorkerProcess:
    """A ``manage.py celery worker`` (or ``beat``) subprocess with its log in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 20.0, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}) before {text!r}:\n{log}")
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not seen in {timeout}s:\n{self.log()}")

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Kill the worker and its pool children (one process group per worker)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the demo ``record`` task appends to, here and in started workers."""
    path = tmp_path / "executions.txt"
    path.touch()
    monkeypatch.setenv("DJQUEUE_RECORD_FILE", str(path))
    return path


@pytest.fixture
def worker_env(record_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        DJQUEUE_POLLING_INTERVAL="0.05",
        DJQUEUE_RECORD_FILE=str(record_file),
        DJQUEUE_EXTRA_IMPORTS="tests.fault_tasks",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def start_worker(
    transactional_db: None, tmp_path: Path, worker_env: dict[str, str]
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real workers; every one is killed (by process group) when the test ends."""
    yield from _process_starter("worker", " ready.", tmp_path, worker_env)


@pytest.fixture
def start_beat(
    transactional_db: None, tmp_path: Path, worker_env: dict[str, str]
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``celery beat`` processes with a short lease and loop; all killed at the end."""
    env = {**worker_env, "DJQUEUE_BEAT_LEASE_SECONDS": "1.5", "CELERYBEAT_MAX_LOOP_INTERVAL": "0.1"}
    yield from _process_starter("beat", "beat: Starting...", tmp_path, env)


def _process_starter(
    command: str, ready_text: str, tmp_path: Path, base_env: dict[str, str], *,
    cwd: Path = ROOT, settings_module: str = "tests.worker_settings",
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``manage.py celery <command>`` processes in ``cwd``; ``settings=`` gives them
    ``settings_module`` (which must read DJQUEUE_EXTRA_SETTINGS)."""
    started: list[WorkerProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, ready: bool = True,
        settings: dict[str, object] | None = None, inside: Sequence[str] = (),
    ) -> WorkerProcess:
        """``settings`` are added to the process's Django settings (JSON values only);
        ``inside`` prefixes the command (``ip netns exec <host>``: tests/netns.py)."""
        env = dict(env or {})
        if settings:
            env.update(DJANGO_SETTINGS_MODULE=settings_module,
                       DJQUEUE_EXTRA_SETTINGS=json.dumps(settings))
        log_path = tmp_path / f"{command}-{len(started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*inside, sys.executable, "manage.py", "celery", command, "-l", "info", *args],
                cwd=cwd,
                env={**base_env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        process = WorkerProcess(proc, log_path)
        started.append(process)
        if ready:
            process.wait_for(ready_text)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the test's own (tests/pg_cluster.py), to stop and start at will.
    Skipped where the server binaries are missing; under CI=true that is a failure."""
    bindir = server_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries are missing on a CI machine")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    with private_cluster(bindir) as server:
        yield server


@pytest.fixture
def private_mariadb() -> Iterator[PrivateMariaDB]:
    """A MariaDB server of the test's own (tests/mysql_server.py), to restart at will. Skipped
    where the server binaries are missing; under CI=true that is a failure."""
    if not server_installed():
        if os.environ.get("CI") == "true":
            pytest.fail("MariaDB server binaries are missing on a CI machine")
        pytest.skip("MariaDB server binaries (mariadbd, mariadb-install-db) are not installed")
    with private_server() as server:
        yield server


def executions(record_file: Path) -> collections.Counter[str]:
    """How many times each key was executed (one line per start)."""
    return collections.Counter(line.split()[0] for line in record_file.read_text().splitlines())


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


_FAULTS: list[tuple[str, ...]] = []


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record one row of the fault-injection table printed at the end of the run. The row travels
    with the test's report (user_properties), so it reaches the table from pytest-xdist's
    worker processes too."""

    def report(fault: str, *, sent: int, executed: int, lost: int, duplicated: int,
               outcome: str) -> None:
        row = (connection.vendor, fault, str(sent), str(executed), str(lost), str(duplicated),
               outcome)
        request.node.user_properties.append(("fault_report", row))

    return report


_ARTIFACTS: list[str] = []


@pytest.fixture
def artifact(request: pytest.FixtureRequest) -> Callable[[Path], Path]:
    """Name a file a test leaves for people to look at (a screenshot): listed at the end of the
    run, from pytest-xdist's worker processes too (as the fault table's rows travel)."""

    def keep(path: Path) -> Path:
        request.node.user_properties.append(("artifact", f"{path}  ({request.node.nodeid})"))
        return path

    return keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":  # the last report of a test: it carries every row
        _FAULTS.extend(tuple(row) for name, row in report.user_properties
                       if name == "fault_report")
        _ARTIFACTS.extend(line for name, line in report.user_properties if name == "artifact")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _ARTIFACTS:
        terminalreporter.section("files the tests left to look at")
        for line in _ARTIFACTS:
            terminalreporter.write_line(line)
    if not _FAULTS:
        return
    terminalreporter.section("fault injection: tasks sent / executed / lost / duplicated")
    header = ("db", "fault", "sent", "executed", "lost", "duplicated", "outcome")
    widths = [max(len(row[i]) for row in [header, *_FAULTS]) for i in range(len(header))]
    for row in [header, *_FAULTS]:
        terminalreporter.write_line("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
