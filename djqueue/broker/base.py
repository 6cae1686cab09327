"""What a vendor's broker offers: :class:`Operations`, the interface every vendor module implements.

A vendor module (:mod:`djqueue.broker.postgresql`, :mod:`djqueue.broker.sqlite`) subclasses
:class:`Operations` and holds all of that vendor's SQL: the hooks the shared statements of
:class:`~djqueue.broker.statements.Statements` are built from (how to say "``id`` is one of
these", the clock, a lease, rows to skip when locked), the statements that differ as a whole (the
claim, publishing, the results upsert, the idle worker's next-due question), how statements run
(prepared or not, retried when the database is locked) and what only some databases can do
(``LISTEN``, a round as one statement, ``VACUUM``); the defaults here do without those.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import connections

from .rows import (
    RESULTS_TABLE, REVOKED_TABLE, TABLE, Claimed, ClaimRequest, FlowRows, NewMessage, StartNow,
)
from .workflow_statements import WorkflowStatements

if TYPE_CHECKING:
    from ..backends.base import ResultRecord

#: Dead row versions below which the message table is left to the database's own cleanup
#: (see :meth:`Operations.vacuum_if_bloated`).
DEAD_ROWS = 10_000

#: Ids per statement where a statement lists them as placeholders: SQLite refuses statements with
#: more than a few thousand parameters.
ID_SLICE = 900

#: Seconds back that :meth:`Operations.next_due` still counts a message as "next due". A
#: message can fall due between an idle worker's empty claim and its look for the next due
#: one; counted, it wakes the worker at once instead of after a whole polling interval.
DUE_LOOKBACK = 5.0

#: What a claim returns per message after its columns: expired, revoked, marked started.
CLAIM_FLAGS = (
    "(expires IS NOT NULL AND expires <= {now}), "
    f"EXISTS (SELECT 1 FROM {REVOKED_TABLE} r WHERE r.task_id = {TABLE}.task_id), "
    f"{TABLE}.state = 'started'"
)


class ListenerLost(Exception):
    """The listening connection could not be opened or was lost (the message says why)."""


class ListenerUnavailable(ListenerLost):
    """Listening is impossible with this configuration (the message says why and what to set):
    the worker polls, and does not try again."""


class RoundNeedsTransaction(Exception):
    """:meth:`Operations.run_round` wrote nothing: the round must be a transaction (a chord it
    counts down reached zero, so its body is to be written with it, or is not in the table)."""


class Operations(WorkflowStatements):
    """The message table's statements on one database alias, ``using``. Get one with
    :func:`djqueue.broker.operations`."""

    #: Django's ``connection.vendor`` this class serves.
    vendor: ClassVar[str]
    #: Whether :meth:`listen` can wake a worker when messages are published (else it polls).
    can_listen: ClassVar[bool] = False
    #: Whether :meth:`run_round` sends a worker's common round as one statement.
    one_statement_rounds: ClassVar[bool] = False
    #: Seconds an idle worker waits between looks at the queue unless
    #: ``BROKER_TRANSPORT_OPTIONS["polling_interval"]`` says otherwise.
    polling_interval: ClassVar[float] = 1.0

    # How statements run.

    def execute(self, sql: str, params: Sequence[Any], fetch: bool = False) -> list[Any]:
        """Run one of djqueue's hot statements (publishing, the claim, the worker's round) on
        Django's connection, in the caller's transaction; its rows if ``fetch``."""
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if fetch else []

    def steer_worker_planner(self, threads: Sequence[str]) -> None:
        """Tune the sessions that ``threads`` (names) of a worker process open from now on, for
        djqueue's own statements only (the prefork pool's main process)."""

    # The statements each vendor writes in its own way.

    def claim_statement(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        owner: int | None,
        lease_seconds: float,
        start: StartNow | None = None,
        before: Sequence[tuple[str, list[object]]] = (),
        confirm: str | None = None,
    ) -> tuple[str, list[object]]:
        """The statement that reserves up to ``limit`` ready messages from ``queues`` (highest
        priority first, then oldest), marking started those ``start`` says, as ``(sql, params)``.
        ``before`` are ``(sql, params)`` of statements (data-modifying ones, with
        :attr:`one_statement_rounds`) to run first in the same statement, as ``WITH`` queries
        ``w0``, ``w1``…; ``confirm`` is a query over them whose rows have the claim's columns,
        returned with the claim's rows (:meth:`run_round`)."""
        sql, params = self._claim(queues, limit, worker, owner, lease_seconds, start, confirm)
        ctes = "".join(f"w{i} AS ({part}), " for i, (part, _) in enumerate(before))
        return (f"WITH {ctes}{sql}",
                [p for _, part_params in before for p in part_params] + params)

    def _claim(
        self, queues: Sequence[str], limit: int, worker: str, owner: int | None,
        lease_seconds: float, start: StartNow | None, confirm: str | None,
    ) -> tuple[str, list[object]]:
        """The claim after ``WITH``: its own ``WITH`` queries and main statement."""
        raise NotImplementedError

    def claim(
        self,
        queues: Sequence[str],
        limit: int,
        worker: str,
        owner: int | None,
        lease_seconds: float,
        start: StartNow | None = None,
    ) -> list[Claimed]:
        """Reserve up to ``limit`` ready messages from ``queues``: highest priority first, then
        oldest.

        Each row comes back flagged when it has expired or its task id was revoked, so the worker
        can settle it without running it, and when the claim marked it started (``start``).
        """
        if limit <= 0 or not queues:
            return []
        sql, params = self.claim_statement(queues, limit, worker, owner, lease_seconds, start)
        return self.retrying(lambda: self._claimed(sql, params, owner))

    def _claimed(self, sql: str, params: list[object], owner: int | None) -> list[Claimed]:
        """Run a claim statement alone; the messages it took (see
        :func:`~djqueue.broker.rows.claimed_from_rows`)."""
        raise NotImplementedError

    def next_due(self, queues: Sequence[str]) -> float | None:
        """Seconds until the earliest delayed (countdown/eta) message in ``queues`` is due, if
        any (0 for one that fell due in the last :data:`DUE_LOOKBACK` seconds). An idle worker
        sleeps that long instead of a whole polling interval."""
        raise NotImplementedError

    def publish_one(self, message: NewMessage, now: datetime.datetime) -> None:
        """Write one message (waking listening workers when the transaction commits)."""
        raise NotImplementedError

    def publish_many(self, messages: Iterable[NewMessage], now: datetime.datetime) -> None:
        """Write a batch in one transaction (the caller's, when there is one)."""
        raise NotImplementedError

    def results_upsert(
        self, records: Sequence[ResultRecord], only: str | None = None
    ) -> tuple[str, list[object]]:
        """One ``INSERT … ON CONFLICT (task_id) DO UPDATE`` of the results table for any number
        of records, as ``(sql, params)``. ``only`` (with :attr:`one_statement_rounds`) is a query
        whose rows are the task ids to store: the others are left out."""
        raise NotImplementedError

    def results_of(self, task_ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """``(task_id, state, content_type, result)`` of the results table's rows of those of
        ``task_ids`` that have one (what a chord's body is called with), in slices of
        :data:`ID_SLICE` ids."""
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(task_ids), ID_SLICE):
            among, params = self.one_of("task_id", task_ids[start : start + ID_SLICE], "text")
            found.extend(self.execute(f"SELECT task_id, state, content_type, result FROM "
                                      f"{RESULTS_TABLE} WHERE {among}", params, fetch=True))
        return found

    # What only some databases can do; the defaults do without.

    def run_round(
        self, owner: int | None, acks: Sequence[int], starts: Sequence[int],
        acks_late: Sequence[int], records: Sequence[ResultRecord], claim: ClaimRequest | None,
        lease_seconds: float, flows: FlowRows | None = None,
    ) -> tuple[list[Claimed], set[int]]:
        """A worker's common round as one statement (see :mod:`djqueue.worker.rounds`): store
        ``records`` and write ``flows`` for the messages it still holds, acknowledge ``acks``,
        start ``starts``, claim; returns what it claimed (the messages of ``flows`` it wrote
        started among them) and the ids it started. Raises :class:`RoundNeedsTransaction`,
        having written nothing, when a chord of ``flows`` reaches zero."""
        raise NotImplementedError(f"{self.vendor} sends a round as a transaction")

    def listen(self, using: str | None = None) -> Any:
        """A connection of its own that hears of new messages and control commands, for the
        worker to wait on (``fileno()``, ``close()``), made with the settings of ``using``
        (``DJQUEUE_LISTEN_DATABASE``) if given; raises :class:`ListenerLost`."""
        raise NotImplementedError(f"{self.vendor} cannot listen: workers poll")

    def heard(self, listening: Any) -> tuple[set[str], bool]:
        """What arrived on ``listening`` without waiting: the queues that have new messages, and
        whether a control command was sent; raises :class:`ListenerLost`."""
        raise NotImplementedError(f"{self.vendor} cannot listen: workers poll")

    def announce_control(self) -> None:
        """Wake listening workers for a remote-control command (when the transaction commits)."""

    def vacuum_if_bloated(self, known_dead: int = 0) -> bool:
        """Clean the message table's dead rows if there are many; True if it did. ``known_dead``:
        dead rows the caller knows it left."""
        return False

    # Shared pieces of the claims.

    def _among(self, column: str, names: Sequence[str]) -> tuple[str, list[object]]:
        return ("FALSE", []) if not names else self.one_of(column, names, "text")

    def _starts_now(self, start: StartNow | None, rank: str, name: str) -> tuple[str, list[object]]:
        """The SQL condition for "mark this one started now", given the SQL of a claimed row's rank
        (1 for the first in claim order) and of its task name."""
        if not start:
            return "FALSE", []
        known, known_params = self._among(name, start.names)
        short, short_params = self._among(name, start.short_names)
        return (f"(({rank} <= %s AND {known}) OR ({rank} <= %s AND {short}))",
                [start.idle, *known_params, start.idle + start.queued, *short_params])
