"""A PgBouncer of the test's own, in transaction pooling mode, in front of the suite's PostgreSQL:
Debian's ``pgbouncer`` package (scripts/test installs it as root), a configuration in a temporary
directory, a free port. The ``pgbouncer`` fixture in tests/test_pgbouncer.py skips (or, under
CI=true, fails) where the program is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .pg_cluster import _as_postgres, free_port


class PgBouncer:
    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def pgbouncer(server_host: str, server_port: int, pool_size: int = 2) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode on a free port, passing every database name through to
    ``server_host:server_port``, with few server connections so that clients share them (as a
    busy site's do). Stopped, by process group, on exit."""
    program = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    folder = Path(tempfile.mkdtemp(prefix="djqueue-pgbouncer-"))
    folder.chmod(0o755)  # read by the postgres user when the suite runs as root
    port = free_port()
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server_host} port={server_port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    for path in folder.iterdir():
        path.chmod(0o644)
    log = folder / "pgbouncer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_as_postgres([program, str(folder / "pgbouncer.ini")]),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    bouncer = PgBouncer(port, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start:\n{bouncer.log_text()}")
                time.sleep(0.05)
        yield bouncer
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
