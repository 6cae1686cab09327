"""PostgreSQL's worker round as one statement (a part of :mod:`~djqueue.broker.postgresql`, whose
:class:`~djqueue.broker.postgresql.PostgreSQLOperations` takes it from :class:`PostgreSQLRound`).

The writes are data-modifying ``WITH`` queries ``w0``, ``w1``… and the claim is the main query,
so the round is one implicit transaction with one commit. In this order: the acknowledgement and
the start (their rows are the task ids this worker still held), the results of those, then what
follows the finished tasks of workflows (:class:`~djqueue.broker.rows.FlowRows`), again only for
those still held:

- their messages, inserted ready (and announced with ``pg_notify`` from the insert's
  ``RETURNING``), or started by this worker when the pool has room for them and no older message
  of their queue and at least their priority waits: such a message is returned with the claimed
  ones, so the next step of a chain runs without waiting for a claim;
- the count-down of one chord's row. When it reaches zero (or the row is missing), the main query
  divides by zero: the statement fails and writes nothing, and the worker sends the round as a
  transaction, which writes the chord's body with it (:mod:`djqueue.worker.workflow`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.db import DataError, connections
from django.utils import timezone

from ..models import Message
from .base import CLAIM_FLAGS, Operations, RoundNeedsTransaction
from .rows import (
    CHORD_TABLE, CLAIMED_COLUMNS, TABLE, Claimed, ClaimRequest, FlowRows, claimed_from_rows,
    row_plan, row_tail,
)

if TYPE_CHECKING:
    from ..backends.base import ResultRecord

#: The channel that carries "new messages in this queue" (the payload is the queue name).
NOTIFY_CHANNEL = "djqueue"


def _returning(body: str) -> str:
    return (f"RETURNING {TABLE}.id, {TABLE}.task_id, {TABLE}.task_name, queue, priority, "
            f"content_type, {body}, retries, deliveries, time_limit, soft_time_limit, "
            + CLAIM_FLAGS.format(now="now()"))


#: What a claim returns per message: the fields of :class:`Claimed`, in order.
RETURNING = _returning("body")
#: What the round returns of a message it wrote started: the same but the body, which the worker
#: has (a chain's carries every step still to run).
_STARTED = _returning("NULL")
#: A row of the round's answer that is only a message id (the rest NULL).
_NULLS = ", NULL" * (CLAIMED_COLUMNS - 1)
#: PostgreSQL's ``division_by_zero``: the round's way to write nothing (see the module's text).
_DIVISION_BY_ZERO = "22012"


class PostgreSQLRound(Operations):
    """The worker's round on PostgreSQL."""

    def run_round(
        self, owner: int | None, acks: Sequence[int], starts: Sequence[int],
        acks_late: Sequence[int], records: Sequence[ResultRecord], claim: ClaimRequest | None,
        lease_seconds: float, flows: FlowRows | None = None,
    ) -> tuple[list[Claimed], set[int]]:
        parts: list[tuple[str, list[object]]] = []
        held: list[str] = []
        extra: list[tuple[str, list[object]]] = []  # more rows of the answer, claim-shaped
        if acks:
            held.append(f"SELECT task_id FROM w{len(parts)}")
            parts.append(self.ack_statement(acks, owner))
        if starts:
            extra.append((f"SELECT id{_NULLS} FROM w{len(parts)}", []))
            held.append(f"SELECT task_id FROM w{len(parts)}")
            parts.append(self.start_statement(starts, acks_late, owner,
                                              lease_seconds=lease_seconds))
        only = " UNION ALL ".join(held) if owner is not None else None
        if records:
            parts.append(self.results_upsert(records, only=only))
        if flows is not None and (only is None or held):
            extra.extend(self._flow_parts(parts, flows, only, claim, owner, lease_seconds))
        confirm = " UNION ALL ".join(sql for sql, _ in extra) or None
        confirm_params = [p for _, extra_params in extra for p in extra_params]
        if claim is not None:
            sql, params = self.claim_statement(
                claim.queues, claim.limit, claim.worker, owner, claim.lease_seconds, claim.start,
                parts, confirm=confirm)
            rows = self._answer(sql, [*params, *confirm_params], True)
        elif confirm is not None:
            sql = "".join(f"{'WITH' if i == 0 else ','} w{i} AS ({part}) "
                          for i, (part, _) in enumerate(parts)) + confirm
            rows = self._answer(sql, [p for _, part_params in parts for p in part_params]
                                + confirm_params, True)
        elif parts:
            last, last_params = parts.pop()
            sql = "".join(f"{'WITH' if i == 0 else ','} w{i} AS ({part}) "
                          for i, (part, _) in enumerate(parts)) + last
            rows = self._answer(sql, [p for _, part_params in parts for p in part_params]
                                + last_params, False)
        else:
            rows = []
        # Claimed messages, and (task_id NULL) the ids the round started.
        claimed = claimed_from_rows([row for row in rows if row[1] is not None])
        if flows is not None and any(flows.start):
            bodies = {message.task_id: message.body for message in flows.messages}
            for message in claimed:
                if message.body is None:
                    message.body = bodies[message.task_id]
        return claimed, {row[0] for row in rows if row[1] is None}

    @functools.cached_property
    def _message_columns(self) -> tuple[list[str], list[str]]:
        """The columns a new message fills (:func:`~djqueue.broker.rows.row_plan`) and their
        types."""
        fields = {f.column: f for f in Message._meta.concrete_fields}
        columns = list(row_plan().columns)
        return columns, [fields[c].db_type(connections[self.using]) for c in columns]

    def _answer(self, sql: str, params: list[object], fetch: bool) -> list[tuple[object, ...]]:
        try:
            return self.execute(sql, params, fetch=fetch)
        except DataError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == _DIVISION_BY_ZERO:
                raise RoundNeedsTransaction() from exc
            raise

    def _flow_parts(
        self, parts: list[tuple[str, list[object]]], flows: FlowRows, only: str | None,
        claim: ClaimRequest | None, owner: int | None, lease_seconds: float,
    ) -> list[tuple[str, list[object]]]:
        """Append the ``WITH`` queries that write ``flows`` to ``parts``; the queries whose rows
        join the round's answer."""
        extra: list[tuple[str, list[object]]] = []
        kept = f" WHERE _parent IN ({only})" if only else ""
        if flows.messages:
            columns, casts = self._message_columns
            now = timezone.now()
            # One parameter per value: a body in a text array parameter would be escaped into
            # the array's text and parsed back, 15 ms for a 150 kB chain on the test machine.
            row = f"(%s, %s::boolean, %s::boolean, {', '.join(f'%s::{t}' for t in casts)})"
            values: list[object] = []
            for parent, go, late, message in zip(flows.parents, flows.start, flows.acks_late,
                                                 flows.messages):
                values += [parent, go, late, message.task_id, message.body,
                           *row_tail(message.head, now)]
            picked = f"w{len(parts)}"
            parts.append((f"SELECT * FROM (VALUES {', '.join([row] * len(flows.messages))}) "
                          f"AS m(_parent, _go, _late, {', '.join(columns)}){kept}", values))
            listed = ", ".join(columns)
            if claim is not None and any(flows.start):
                # Started here only if a claim now would have taken it first.
                free = (f"_go AND available_at <= now() AND NOT EXISTS (SELECT 1 FROM {TABLE} o "
                        f"WHERE o.state = 'ready' AND o.queue = {picked}.queue "
                        f"AND o.available_at <= now() AND o.priority >= {picked}.priority)")
                taken = {"state": "'started'", "worker": "%s", "owner": "%s",
                         "lease_until": "now() + make_interval(secs => %s)",
                         "started_at": "now()", "deliveries": "1", "acks_late": "_late"}
                picks = ", ".join(taken.get(c, c) for c in columns)
                started = f"w{len(parts)}"
                parts.append((f"INSERT INTO {TABLE} ({listed}) SELECT {picks} FROM {picked} "
                              f"WHERE {free} ON CONFLICT (task_id) DO NOTHING {_STARTED}",
                              [claim.worker, owner, float(lease_seconds)]))
                extra.append((f"SELECT * FROM {started}", []))
            else:
                free = "FALSE"
            parts.append((f"INSERT INTO {TABLE} ({listed}) SELECT {listed} FROM {picked} "
                          f"WHERE NOT ({free}) ON CONFLICT (task_id) DO NOTHING "
                          f"RETURNING pg_notify('{NOTIFY_CHANNEL}', queue)", []))
        if flows.children:
            parents, records = (list(column) for column in zip(*flows.children))
            keys = [record.task_id for record in records]
            # A parent's children only if the parent was still held.
            of_held = ("SELECT _key FROM unnest(%s::text[], %s::text[]) AS c(_key, _parent) "
                       f"WHERE _parent IN ({only})") if only else None
            sql, params = self.results_upsert(records, only=of_held)
            parts.append((sql, [*params, keys, parents] if of_held else params))
        if flows.members:
            # One JSON text of (parent, chord, failure) rows: as three text arrays, psycopg
            # encoded each value in Python, 4 µs a member (a chord's members ship one each).
            finished = f"w{len(parts)}"
            parts.append(("SELECT _chord, count(*) AS n, coalesce((array_agg(_failure ORDER BY "
                          "_n) FILTER (WHERE _failure <> ''))[1], '') AS failure FROM (SELECT "
                          "e->>0 AS _parent, e->>1 AS _chord, e->>2 AS _failure, _n FROM "
                          "jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(e, _n)) "
                          f"AS m{kept} GROUP BY _chord",
                          [json.dumps(flows.members, separators=(",", ":"))]))
            counted = f"w{len(parts)}"
            parts.append((f"UPDATE {CHORD_TABLE} c SET pending = c.pending - f.n, failure = "
                          "CASE WHEN c.failure = '' THEN f.failure ELSE c.failure END "
                          f"FROM {finished} f WHERE c.id = f._chord RETURNING c.pending", []))
            # No row, unless the chord reached zero or is missing: then the division fails.
            extra.append((f"SELECT 0{_NULLS} WHERE 1 / (CASE WHEN (SELECT count(*) FROM "
                          f"{counted} WHERE pending > 0) = (SELECT count(*) FROM {finished}) "
                          "THEN 1 ELSE 0 END) = 0", []))
        return extra

