"""A TCP proxy in front of PostgreSQL that loses the answer of one committed transaction: the
fault of a network cut (or a killed backend) between a commit and its answer reaching the client.

Armed with a marker (a task id), it forwards everything until a row the server sends contains the
marker; from there it keeps back what the server sends, passing it on whenever the server says
the transaction is still open (``ReadyForQuery`` with status ``T`` or ``E``: the client waits for
it). At the first ``ReadyForQuery`` with status ``I`` (idle: the transaction committed, a
statement in autocommit or the ``COMMIT`` of a block) it drops what it kept and closes both
sides. The client never learns that its statement committed; the database has the change.

The proxy listens on PostgreSQL's port on another loopback address when it can (127.0.0.2), so
djqueue sees the port it connected to and takes it for a direct connection (prepared statements,
``LISTEN``: the worker's usual path); else on a free port (djqueue then treats it as a pooler).
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: SSLRequest and GSSENCRequest: answered "N" (no encryption) by the proxy itself, so that what
#: follows is plain protocol it can read.
ENCRYPTION_REQUESTS = {80877103, 80877104}


class AnswerDropper:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.2", upstream[1]))
        except OSError:  # the server listens on every address: a port of our own
            self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.host, self.port = self.listener.getsockname()[:2]
        self._marker: bytes | None = None
        self._lock = threading.Lock()
        self.dropped = threading.Event()  # an answer was lost
        self._closing = False
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def arm(self, marker: str) -> None:
        """Lose the answer of the first transaction that returns a row containing ``marker``."""
        with self._lock:
            self._marker = marker.encode()

    def close(self) -> None:
        self._closing = True
        self.listener.close()
        for sock in list(self._sockets):
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        server = None
        self._sockets.append(client)
        try:
            startup = _startup(client)
            if startup is None:
                return
            server = socket.create_connection(self.upstream)
            self._sockets.append(server)
            server.sendall(startup)
            self._relay(client, server)
        except OSError:
            pass
        finally:
            _close(client)
            if server is not None:
                _close(server)

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        pending = b""  # server bytes not yet split into messages
        kept = bytearray()  # messages held back since the marker was seen
        doomed = False
        while not self._closing:
            ready, _, _ = select.select([client, server], [], [], 0.5)
            if client in ready:
                data = client.recv(65536)
                if not data:
                    return
                server.sendall(data)
            if server not in ready:
                continue
            data = server.recv(65536)
            if not data:
                return
            pending += data
            out = bytearray()
            while len(pending) >= 5:
                kind, length = pending[:1], struct.unpack("!i", pending[1:5])[0]
                if len(pending) < 1 + length:
                    break
                message, pending = pending[:1 + length], pending[1 + length:]
                if not doomed and kind == b"D" and self._take(message):
                    doomed = True
                if not doomed:
                    out += message
                    continue
                kept += message
                if kind == b"Z" and message[5:6] == b"I":  # committed: lose the answer
                    self.dropped.set()
                    client.sendall(out)
                    return
                if kind == b"Z":  # still in the transaction: the client waits for this
                    out += kept
                    kept.clear()
            if out:
                client.sendall(out)

    def _take(self, message: bytes) -> bool:
        with self._lock:
            if self._marker is None or self._marker not in message:
                return False
            self._marker = None  # once
            return True


def _startup(client: socket.socket) -> bytes | None:
    """The client's startup message, after answering its requests for encryption with "N"."""
    while True:
        head = _read(client, 8)
        if head is None:
            return None
        length, code = struct.unpack("!ii", head)
        if code in ENCRYPTION_REQUESTS and length == 8:
            client.sendall(b"N")
            continue
        rest = _read(client, length - 8)
        return None if rest is None else head + rest


def _read(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@contextmanager
def answer_dropper(upstream: tuple[str, int]) -> Iterator[AnswerDropper]:
    proxy = AnswerDropper(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
