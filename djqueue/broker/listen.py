"""Waking an idle worker the moment a message is published, on databases that can tell
(:attr:`~djqueue.broker.base.Operations.can_listen`: PostgreSQL's ``LISTEN``).

Publishing announces new messages in the same transaction as the insert (on PostgreSQL, ``NOTIFY
djqueue, '<queue>'``, in the same statement for one message), so the database delivers the
announcement when the publishing transaction commits. A worker's :class:`Listener` holds a
connection of its own (:meth:`~djqueue.broker.base.Operations.listen`: never one of Django's,
which pool children and transactions use), and the worker adds that connection to what its loop
already waits on. Remote-control commands are announced too, so a listening worker answers them at
once instead of at its next control poll.

Polling stays: it is the fallback when the listening connection is lost (it is reopened at most
every :data:`REOPEN_SECONDS`), and the only mechanism on databases that cannot listen (SQLite).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from . import operations
from .base import ListenerLost, ListenerUnavailable

logger = logging.getLogger("djqueue.notify")

REOPEN_SECONDS = 5.0


class Listener:
    """Listen for new messages in ``queues``; does nothing on databases that cannot."""

    def __init__(self, using: str, queues: Sequence[str], listen_using: str | None = None) -> None:
        self.using = using
        self.listen_using = listen_using  # DJQUEUE_LISTEN_DATABASE: a direct connection's alias
        self.queues = set(queues)
        self._wanted = False
        self._conn: Any = None
        self._reopen_at = 0.0
        self._deaf = False  # True after losing the connection: what was missed needs one look
        self._control = False  # a control command was announced since the last look

    def open(self) -> None:
        """Start listening (the worker's ``run()`` does; in-process tests that drive ``loop()``
        poll only)."""
        self._wanted = operations(self.using).can_listen
        if not self._wanted or self._conn is not None or time.monotonic() < self._reopen_at:
            return
        try:
            self._conn = operations(self.using).listen(self.listen_using)
        except ListenerUnavailable as exc:
            logger.warning("%s; polling for new messages instead.", exc)
            self._wanted = False
        except ListenerLost as exc:
            logger.warning("Cannot listen for new messages (%s); polling only for now.", exc)
            self._lost()
        else:
            logger.debug("Listening for new messages on %s.", ", ".join(sorted(self.queues)))

    def waitables(self) -> list[Any]:
        """What the worker loop should wait on besides its pool: the listening connection."""
        if self._wanted:
            self.open()
        return [self._conn] if self._conn is not None else []

    def limit(self, timeout: float) -> float:
        """``timeout``, shortened so that a lost connection is reopened on time."""
        if self._wanted and self._conn is None:
            return max(0.0, min(timeout, self._reopen_at - time.monotonic()))
        return timeout

    def heard(self) -> bool:
        """Read what has arrived, without waiting: was a message published to our queues?"""
        if self._conn is None:
            return False
        if self._deaf:
            self._deaf = False
            self._control = True
            return True
        try:
            queues, control = operations(self.using).heard(self._conn)
        except ListenerLost as exc:
            logger.warning("Lost the listening connection (%s); polling until it is back.", exc)
            self._lost()
            return True
        self._control |= control
        return not self.queues.isdisjoint(queues)

    def control_heard(self) -> bool:
        """Was a remote-control command announced since the last call? (Read by ``heard()``.)"""
        heard, self._control = self._control, False
        return heard

    def _lost(self) -> None:
        self._disconnect()
        self._reopen_at = time.monotonic() + REOPEN_SECONDS
        self._deaf = True

    def close(self) -> None:
        self._wanted = False
        self._disconnect()

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self._conn = None
