"""A private PostgreSQL cluster: initdb into a temporary directory, served on a free port, so a
test (or bench/soak.py) can stop, start and restart it without disturbing anyone else.

Also the SQL of a trigger that keeps every result written (``RESULT_HISTORY``), for the tests
and the soak that must tell a result overwritten from one written once. Standard library only:
bench/soak.py uses it outside pytest. The ``private_postgres`` fixture in
conftest.py skips (or, under CI=true, fails) where the server binaries are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def server_bindir() -> Path | None:
    """Where the newest installed PostgreSQL server's initdb and pg_ctl are, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the postgres user there."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    def __init__(self, bindir: Path, datadir: Path, port: int) -> None:
        self.bindir, self.datadir, self.port = bindir, datadir, port
        self.url = f"postgres://postgres@127.0.0.1:{port}/postgres"
        self.listen = ["127.0.0.1"]

    def serve(self, addresses: list[str], network: str) -> None:
        """Also listen on ``addresses`` and let clients of ``network`` in (restarts)."""
        with (self.datadir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {network} trust\n")
        self.listen = ["127.0.0.1", *addresses]
        self.pg_ctl("restart", "-m", "fast")

    def pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -c listen_addresses={','.join(self.listen)} -k {self.datadir}"
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-o", options,
                   "-l", str(self.datadir / "server.log"), *args]
        subprocess.run(_as_postgres(command), check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        """An outage: the server shuts down at once, closing every client's connection."""
        self.pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        self.pg_ctl("start")


@contextmanager
def private_cluster(bindir: Path) -> Iterator[PrivatePostgres]:
    """A new cluster, started; stopped and removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="djqueue-pg-"))
    datadir = base / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(datadir, "postgres")
    initdb = [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust"]
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True, timeout=120)
    server = PrivatePostgres(bindir, datadir, free_port())
    server.start()
    try:
        yield server
    finally:
        try:
            server.pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        finally:
            shutil.rmtree(base, ignore_errors=True)


#: Every result written, kept by a trigger: what the result table alone cannot tell.
RESULT_HISTORY = """
CREATE TABLE IF NOT EXISTS result_history (task_id text, state text, worker_lost boolean,
                                           at timestamptz DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION note_result() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO result_history (task_id, state, worker_lost)
    VALUES (NEW.task_id, NEW.state, coalesce(NEW.result LIKE '%WorkerLostError%', false));
    RETURN NEW; END $$;
DROP TRIGGER IF EXISTS note_result ON djqueue_taskresult;
CREATE TRIGGER note_result AFTER INSERT OR UPDATE ON djqueue_taskresult
    FOR EACH ROW EXECUTE FUNCTION note_result();
"""
#: Tasks whose result said WorkerLostError, then SUCCESS (overwritten: the task ran after all).
OVERWRITTEN = """
SELECT DISTINCT lost.task_id FROM result_history lost JOIN result_history won
ON won.task_id = lost.task_id AND won.at > lost.at AND won.state = 'SUCCESS'
WHERE lost.worker_lost
"""


def manage(url: str, *args: str, env: dict[str, str], timeout: float = 120) -> str:
    """``manage.py *args`` against the database at ``url``; returns its standard output."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**env, "DATABASE_URL": url},
                          check=True)
    return done.stdout
