"""The worker under the real supervisord, configured from supervisord.conf.example."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from djqueue import states
from tests import fault_tasks as ft

from .conftest import ROOT, wait_until

BIN = Path(sys.executable).parent

# The subject is supervisord's configuration (stop signal and wait, restart after kill -9); what
# the worker does with the database on a warm shutdown or after a kill is checked on each database
# by tests/test_worker_process.py and tests/test_faults.py.
pytestmark = pytest.mark.vendor_neutral


class Supervisor:
    def __init__(self, conf: Path, log: Path) -> None:
        self.conf = conf
        self.log = log

    def ctl(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    def worker_pid(self) -> int:
        return int(self.ctl("pid", "celeryd").strip())

    def worker_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def supervisor(transactional_db: None, tmp_path: Path, worker_env: dict[str, str]) -> Iterator[Supervisor]:
    """supervisord running the example's [program:celeryd] (paths and startsecs adapted)."""
    text = (ROOT / "djqueue" / "deploy" / "supervisord.conf.example").read_text()
    text = text.replace("%(here)s/.venv/bin/python", sys.executable)
    text = text.replace("directory=%(here)s", f"directory={ROOT}")
    text = text.replace("startsecs=10", "startsecs=1")  # the example's 10 s would slow the test
    conf = tmp_path / "supervisord.conf"
    conf.write_text(text)
    env = {**worker_env, "DJQUEUE_WORKER_LOST_TIMEOUT": "1.5"}
    proc = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(conf)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    sup = Supervisor(conf, tmp_path / "celeryd.log")
    try:
        wait_until(lambda: " ready." in sup.worker_log(), timeout=30, what="worker under supervisord")
        yield sup
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # A worker killed with -9 leaves no orphans: its children exit when it is gone.


def test_stop_is_a_warm_shutdown_and_kill_9_is_survived(supervisor: Supervisor, record_file) -> None:
    long = ft.nap.delay("long", 2)
    wait_until(lambda: f"[{long.id}]" in supervisor.worker_log(), what="task started")
    started = time.monotonic()
    assert "celeryd: stopped" in supervisor.ctl("stop", "celeryd")
    assert time.monotonic() - started >= 1  # supervisorctl waited for the task to finish
    assert long.state == states.SUCCESS and long.get() == "long"
    assert "Warm shutdown" in supervisor.worker_log()

    assert "celeryd: started" in supervisor.ctl("start", "celeryd")
    first_pid = supervisor.worker_pid()
    tasks = [ft.nap_late.delay(f"t{i}", 0.5) for i in range(6)]
    wait_until(lambda: len(record_file.read_text().splitlines()) >= 2, what="work in progress")
    os.kill(first_pid, signal.SIGKILL)
    wait_until(lambda: supervisor.worker_pid() not in (0, first_pid), timeout=30,
               what="supervisord restarting the worker")
    assert [t.get(timeout=30) for t in tasks] == [f"t{i}" for i in range(6)]


INIT_SCRIPT = Path("/etc/init.d/supervisor")
PID_FILE = Path("/var/run/supervisord.pid")


def _supervisord_running() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@pytest.fixture
def debian_supervisor(transactional_db: None, tmp_path: Path,
                      worker_env: dict[str, str]) -> Iterator[Path]:
    """Debian's supervisor package, started by its own init script with the shipped
    ``supervisor-program.conf`` in ``/etc/supervisor/conf.d`` (paths and environment filled in);
    yields the worker's log file."""
    if not INIT_SCRIPT.exists() or os.geteuid() != 0:
        message = ("Debian's supervisor package is not installed (scripts/test installs it with "
                   "apt-get as root): the init-script recipe of docs/deployment.md is not checked")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    if _supervisord_running():
        pytest.skip("the machine's supervisord runs already: not stopped for a test")
    log = tmp_path / "celeryd.log"
    keys = ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DJQUEUE_RECORD_FILE",
            "DJQUEUE_EXTRA_IMPORTS", "DJQUEUE_POLLING_INTERVAL", "PYTHONUNBUFFERED")
    environment = ",".join(f'{key}="{worker_env[key]}"' for key in keys if key in worker_env)
    text = (ROOT / "djqueue" / "deploy" / "supervisor-program.conf").read_text()
    text = (text.replace("/path/to/project/.venv/bin/python", sys.executable)
            .replace("/path/to/project", str(ROOT))
            .replace("/var/log/supervisor/celeryd.log", str(log))
            .replace("startsecs=10", "startsecs=1"))
    text = "\n".join(f"environment={environment}" if line.startswith("environment=") else line
                     for line in text.splitlines())
    conf = Path("/etc/supervisor/conf.d") / f"djqueue-test-{os.getpid()}.conf"
    conf.write_text(text + "\n")
    try:
        # The script's own verdict is not read: it looks for the pid file one second after
        # starting, which a loaded machine misses ("ERROR." though supervisord starts).
        started = subprocess.run([str(INIT_SCRIPT), "start"], capture_output=True, text=True,
                                 timeout=60)
        wait_until(lambda: log.exists() and " ready." in log.read_text(errors="replace"),
                   timeout=60, what=f"worker under the package's supervisord ({started.stdout})")
        yield log
    finally:
        conf.unlink()
        subprocess.run([str(INIT_SCRIPT), "stop"], capture_output=True, timeout=120)
        pid = _supervisord_running()
        if pid:  # the init script gave up: never leave it behind
            os.kill(pid, signal.SIGKILL)


def test_debian_package_init_script_runs_the_shipped_program(debian_supervisor: Path) -> None:
    task = ft.nap.delay("debian", 1)
    wait_until(lambda: f"[{task.id}]" in debian_supervisor.read_text(errors="replace"),
               what="task started")
    done = subprocess.run(["/usr/bin/supervisorctl", "-c", "/etc/supervisor/supervisord.conf", "stop",
                           "celeryd"], capture_output=True, text=True, timeout=60)
    assert "celeryd: stopped" in done.stdout, done.stdout + done.stderr
    assert task.state == states.SUCCESS and task.get() == "debian"
    assert "Warm shutdown" in debian_supervisor.read_text(errors="replace")
