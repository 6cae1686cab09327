"""Waking an idle worker the moment a message is published (PostgreSQL ``LISTEN``).

:func:`djqueue.client.publishing.publish` sends ``NOTIFY djqueue, '<queue>'`` in the same transaction as
the insert (in the same statement for one message), so PostgreSQL delivers it when the publishing
transaction commits. A worker's
:class:`Listener` holds its own autocommit connection (never one of Django's, which pool children
and transactions use), and the worker adds that connection to what its loop already waits on.

Remote-control commands are announced on a second channel (:data:`CONTROL_CHANNEL`), so a
listening worker answers them at once instead of at its next control poll.

Polling stays: it is the fallback when the listening connection is lost (it is reopened at most
every :data:`REOPEN_SECONDS`), and the only mechanism on SQLite.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from django.db import connections

from ..client.publishing import NOTIFY_CHANNEL

logger = logging.getLogger("djqueue.notify")

REOPEN_SECONDS = 5.0
#: The channel that carries "a remote-control command was sent" (see :mod:`djqueue.client.control`).
CONTROL_CHANNEL = "djqueue_control"


class Listener:
    """``LISTEN`` for new messages in ``queues``; does nothing on databases without it."""

    def __init__(self, using: str, queues: Sequence[str]) -> None:
        self.using = using
        self.queues = set(queues)
        self.supported = connections[using].vendor == "postgresql"
        self._wanted = False
        self._conn: Any = None
        self._reopen_at = 0.0
        self._deaf = False  # True after losing the connection: what was missed needs one look
        self._control = False  # a control command was announced since the last look

    def open(self) -> None:
        """Start listening (the worker's ``run()`` does; in-process tests that drive ``loop()``
        poll only)."""
        self._wanted = self.supported
        if not self._wanted or self._conn is not None or time.monotonic() < self._reopen_at:
            return
        import psycopg

        params = connections[self.using].get_connection_params()
        params.pop("cursor_factory", None)
        params.setdefault("connect_timeout", 5)
        try:
            self._conn = psycopg.connect(**params, autocommit=True)
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._conn.execute(f"LISTEN {CONTROL_CHANNEL}")
        except psycopg.Error as exc:
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
        import psycopg

        try:
            notes = list(self._conn.notifies(timeout=0))
        except psycopg.Error as exc:
            logger.warning("Lost the listening connection (%s); polling until it is back.", exc)
            self._lost()
            return True
        self._control |= any(n.channel == CONTROL_CHANNEL for n in notes)
        return any(n.channel == NOTIFY_CHANNEL and n.payload in self.queues for n in notes)

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
