"""A private MariaDB server: ``mariadb-install-db`` into a temporary directory, served on a free
port, so a test can restart it without disturbing the shared server (or anyone's tests on it).

Standard library only. The ``private_mariadb`` fixture in conftest.py skips (or, under CI=true,
fails) where the server binaries are missing.
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

from .pg_cluster import free_port

SERVER = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"


def server_installed() -> bool:
    return os.access(SERVER, os.X_OK) and shutil.which(INSTALL_DB) is not None


class PrivateMariaDB:
    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir, self.port = datadir, port
        self.url = f"mysql://root@127.0.0.1:{port}/djqueue"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers on its port."""
        log = open(self.datadir.parent / "server.log", "ab")  # noqa: SIM115 - the server's
        self.process = subprocess.Popen(
            [SERVER, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.datadir.parent / 'mysqld.sock'}",
             f"--pid-file={self.datadir.parent / 'mysqld.pid'}", "--skip-log-bin",
             "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=2",
             "--character-set-server=utf8mb4", *(["--user=root"] if os.geteuid() == 0 else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"mariadbd did not answer on port {self.port}: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """A shutdown (SIGTERM: every client's connection is closed) or a crash (SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.datadir.parent / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@contextmanager
def private_server() -> Iterator[PrivateMariaDB]:
    """A new server with an empty ``djqueue`` database, started; killed and removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="djqueue-mariadb-"))
    datadir = base / "data"
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={datadir}", "--skip-test-db",
                    "--auth-root-authentication-method=normal", *user],
                   check=True, capture_output=True, timeout=120)
    server = PrivateMariaDB(datadir, free_port())
    try:
        server.start()
        subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{server.port}", "-uroot",
                        "-e", "CREATE DATABASE djqueue CHARACTER SET utf8mb4"],
                       check=True, capture_output=True, timeout=30)
        yield server
    finally:
        server.stop(signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
