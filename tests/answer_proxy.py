"""TCP proxies in front of the database that lose the answer of one committed transaction: the
fault of a network cut (or a killed backend) between a commit and its answer reaching the client.
Armed with a marker (a task id), a proxy forwards everything until what the server sends contains
the marker; then it lets the transaction go on and commit, drops the commit's answer and closes
both sides. The client never learns that its transaction committed; the database has the change.

PostgreSQL (:class:`PostgresDropper`): from the row with the marker on, it keeps back what the
server sends, passing it on whenever the server says the transaction is still open
(``ReadyForQuery`` with status ``T`` or ``E``: the client waits for it). At the first
``ReadyForQuery`` with status ``I`` (idle: the transaction committed, a statement in autocommit or
the ``COMMIT`` of a block) it drops what it kept. It listens on PostgreSQL's port on another
loopback address when it can (127.0.0.2), so djqueue sees the port it connected to and takes it for
a direct connection (prepared statements, ``LISTEN``: the worker's usual path); else on a free
port (djqueue then treats it as a pooler).

MySQL and MariaDB (:class:`MySQLDropper`): djqueue's claim there is a transaction; after the
marker, the client's ``COMMIT`` goes through and the server's answer to it is dropped. The server's
greeting loses its TLS capability, so that the rest is plain protocol.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: SSLRequest and GSSENCRequest: answered "N" (no encryption) by the proxy itself, so that what
#: follows is plain protocol it can read.
ENCRYPTION_REQUESTS = {80877103, 80877104}


class AnswerDropper:
    """The proxy's sockets and threads; a subclass speaks one protocol (:meth:`_connect`,
    :meth:`_conversation`)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._bind()
        self.listener.listen(64)
        self.host, self.port = self.listener.getsockname()[:2]
        self._marker: bytes | None = None
        self._lock = threading.Lock()
        self.dropped = threading.Event()  # an answer was lost
        self._closing = False
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _bind(self) -> None:
        self.listener.bind(("127.0.0.1", 0))

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
            server = self._connect(client)
            if server is not None:
                self._relay(client, server)
        except OSError:
            pass
        finally:
            _close(client)
            if server is not None:
                _close(server)

    def _upstream(self) -> socket.socket:
        server = socket.create_connection(self.upstream)
        self._sockets.append(server)
        return server

    def _connect(self, client: socket.socket) -> socket.socket | None:
        raise NotImplementedError

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        conversation = self._conversation()
        while not self._closing:
            ready, _, _ = select.select([client, server], [], [], 0.5)
            if client in ready:
                data = client.recv(65536)
                if not data:
                    return
                conversation.asked(data)
                server.sendall(data)
            if server in ready:
                data = server.recv(65536)
                if not data:
                    return
                forward, lost = conversation.answered(data)
                client.sendall(forward)
                if lost:
                    self.dropped.set()
                    return

    def _conversation(self) -> Conversation:
        raise NotImplementedError

    def _take(self, data: bytes) -> bool:
        """Whether ``data`` holds the marker (the first time only)."""
        with self._lock:
            if self._marker is None or self._marker not in data:
                return False
            self._marker = None
            return True


class PostgresDropper(AnswerDropper):
    def _bind(self) -> None:
        try:
            self.listener.bind(("127.0.0.2", self.upstream[1]))
        except OSError:  # the server listens on every address: a port of our own
            super()._bind()

    def _connect(self, client: socket.socket) -> socket.socket | None:
        startup = _startup(client)
        if startup is None:
            return None
        server = self._upstream()
        server.sendall(startup)
        return server

    def _conversation(self) -> Conversation:
        return PostgresConversation(self._take)


class MySQLDropper(AnswerDropper):
    def _connect(self, client: socket.socket) -> socket.socket | None:
        server = self._upstream()
        greeting = _mysql_packet(server)
        if greeting is None:
            return None
        client.sendall(_without_tls(greeting))
        return server

    def _conversation(self) -> Conversation:
        return MySQLConversation(self._take)


class Conversation:
    """One client's connection: what to pass on of the server's answers, and when to stop."""

    def __init__(self, take: Callable[[bytes], bool]) -> None:
        self.take = take  # whether these bytes hold the marker (once)
        self.doomed = False  # the marker was seen: this transaction's commit loses its answer

    def asked(self, data: bytes) -> None:
        """The client sent ``data``."""

    def answered(self, data: bytes) -> tuple[bytes, bool]:
        """The server sent ``data``: what to pass on, and whether the answer is lost now."""
        raise NotImplementedError


class PostgresConversation(Conversation):
    def __init__(self, take: Callable[[bytes], bool]) -> None:
        super().__init__(take)
        self.pending = b""  # server bytes not yet split into messages
        self.kept = bytearray()  # messages held back since the marker was seen

    def answered(self, data: bytes) -> tuple[bytes, bool]:
        self.pending += data
        out = bytearray()
        while len(self.pending) >= 5:
            kind, length = self.pending[:1], struct.unpack("!i", self.pending[1:5])[0]
            if len(self.pending) < 1 + length:
                break
            message, self.pending = self.pending[:1 + length], self.pending[1 + length:]
            if not self.doomed and kind == b"D" and self.take(message):
                self.doomed = True
            if not self.doomed:
                out += message
                continue
            self.kept += message
            if kind == b"Z" and message[5:6] == b"I":  # committed: lose the answer
                return bytes(out), True
            if kind == b"Z":  # still in the transaction: the client waits for this
                out += self.kept
                self.kept.clear()
        return bytes(out), False


class MySQLConversation(Conversation):
    def __init__(self, take: Callable[[bytes], bool]) -> None:
        super().__init__(take)
        self.committing = False
        self.tail = b""  # the end of the last answer, for a marker cut in two

    def asked(self, data: bytes) -> None:
        # A command from the client is one packet; COM_QUERY (3) "COMMIT".
        self.committing = self.doomed and data[4:5] == b"\x03" and (
            data[5:].strip().upper() == b"COMMIT")

    def answered(self, data: bytes) -> tuple[bytes, bool]:
        if self.committing:  # the commit's answer: the transaction is in; lose the answer
            return b"", True
        if not self.doomed and self.take(self.tail + data):
            self.doomed = True
        self.tail = data[-64:]
        return data, False


def _mysql_packet(sock: socket.socket) -> bytes | None:
    head = _read(sock, 4)
    if head is None:
        return None
    body = _read(sock, int.from_bytes(head[:3], "little"))
    return None if body is None else head + body


def _without_tls(greeting: bytes) -> bytes:
    """The server's handshake (v10) without CLIENT_SSL among its capabilities."""
    version_end = greeting.index(b"\0", 5)
    flags_at = version_end + 1 + 4 + 8 + 1  # connection id, auth data part 1, filler
    flags = int.from_bytes(greeting[flags_at:flags_at + 2], "little") & ~0x0800
    return greeting[:flags_at] + flags.to_bytes(2, "little") + greeting[flags_at + 2:]


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
def answer_dropper(vendor: str, upstream: tuple[str, int]) -> Iterator[AnswerDropper]:
    proxy = (PostgresDropper if vendor == "postgresql" else MySQLDropper)(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
