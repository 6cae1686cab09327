"""Claiming: the one statement that takes ready messages for a worker, and what it returns.

Claims are batches taken in one statement. On PostgreSQL the candidate rows are locked with
``FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on each other nor take the same row;
on SQLite the single ``UPDATE … RETURNING`` runs under the database's one write lock, which gives
the same guarantee. The same statement marks started the messages the worker's pool takes at once
(:class:`StartNow`), so those cost one row update, not two. SQLite's claim returns its text as
bytes, decoded here: a row that is not valid UTF-8 is set aside instead of failing every claim.
Every other move of a message is in :mod:`djqueue.broker.statements`.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from .rows import (
    CLAIMED_COLUMNS, REVOKED_TABLE, TABLE, Claimed, StartNow, claimed_from_rows,
)
from .statements import lease_sql, now_param, retry_if_locked, set_aside_unreadable, vendor
from .sql import execute as sql_execute


def claim_statement(
    using: str,
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
    priority first, then oldest), marking started those ``start`` says, as ``(sql, params)``;
    on PostgreSQL its rows are read with :func:`claimed_from_rows` (on SQLite :func:`claim`
    runs it, to decode their text first). ``before`` are ``(sql, params)`` of statements
    (data-modifying ones, on PostgreSQL) to run first in the same statement, as ``WITH``
    queries ``w0``, ``w1``…: :mod:`djqueue.worker.rounds` sends a worker's whole round so.
    ``confirm`` (PostgreSQL) names one of them whose rows start with a message id: each is also
    returned, as a row whose other columns are NULL.
    """
    if vendor(using) == "postgresql":
        sql, params = _postgresql_claim(queues, limit, worker, owner, lease_seconds, start,
                                        confirm)
    else:
        assert confirm is None, "only PostgreSQL sends a round as one statement"
        sql, params = _sqlite_claim(using, queues, limit, worker, owner, lease_seconds, start)
    ctes = "".join(f"w{i} AS ({part}), " for i, (part, _) in enumerate(before))
    return (f"WITH {ctes}{sql}",
            [p for _, part_params in before for p in part_params] + params)


_FLAGS = (
    "(expires IS NOT NULL AND expires <= {now}), "
    f"EXISTS (SELECT 1 FROM {REVOKED_TABLE} r WHERE r.task_id = {TABLE}.task_id), "
    f"{TABLE}.state = 'started'"
)
#: What a claim returns per message: the fields of :class:`Claimed`, in order.
_RETURNING = (
    f"RETURNING {TABLE}.id, {TABLE}.task_id, {TABLE}.task_name, queue, priority, "
    "content_type, body, retries, deliveries, time_limit, soft_time_limit, " + _FLAGS
)
#: SQLite's: the text columns as bytes, which :func:`_decoded` decodes. SQLite keeps any bytes in
#: a text column (only SQL from outside djqueue writes some that are not UTF-8), and sqlite3 then
#: failed the whole claim, at every poll: no message of the queue ran again. ``queue`` is not
#: among them: the claim matched it byte for byte with one of the worker's queue names.
_SQLITE_RETURNING = (
    f"RETURNING {TABLE}.id, CAST({TABLE}.task_id AS BLOB), CAST({TABLE}.task_name AS BLOB), "
    "queue, priority, CAST(content_type AS BLOB), CAST(body AS BLOB), retries, deliveries, "
    "time_limit, soft_time_limit, " + _FLAGS
)
#: Where those are in a row, and their columns.
_TEXT_FIELDS = ((1, "task_id"), (2, "task_name"), (5, "content_type"), (6, "body"))


def _postgresql_claim(
    queues: Sequence[str], limit: int, worker: str, owner: int | None, lease_seconds: float,
    start: StartNow | None, confirm: str | None = None,
) -> tuple[str, list[object]]:
    # ``c``: the picked rows, locked, each with its rank and whether it starts now. Per queue,
    # so each reads the partial index in its order and stops after ``limit`` rows:
    # ``queue = ANY(...)`` would read and sort every waiting row instead. Two updates then take
    # the rows to start and the rows to reserve, each reaching its rows through the primary key
    # (``id = ANY`` of one array): a join on the id could become a hash join over a sequential
    # scan of the whole table when the statistics are from a moment it was small (14 ms
    # instead of 1 ms for 400 rows of 20,000). Splitting them keeps a row's rank a column of
    # ``c``; one update would have to find each row's position in the array, which for 500
    # rows took a quarter of a worker's round.
    go, go_params = _starts_now(True, start, "rn", "task_name")
    late, late_params = _among(True, f"{TABLE}.task_name", start.acks_late_names if start else ())
    picked = (
        f"c AS (SELECT id, {go} AS go FROM (SELECT m.id, m.task_name, "
        "row_number() OVER (ORDER BY m.priority DESC, m.id) AS rn "
        "FROM unnest(%s::text[]) AS q(name) CROSS JOIN LATERAL "
        f"(SELECT id, priority, task_name FROM {TABLE} WHERE state = 'ready' AND queue = q.name "
        "AND available_at <= now() ORDER BY priority DESC, id LIMIT %s "
        "FOR UPDATE SKIP LOCKED) AS m ORDER BY m.priority DESC, m.id LIMIT %s) AS p)"
    )
    params: list[object] = [*go_params, list(queues), limit, limit]
    returning = _RETURNING.format(now="now()")
    # The lease is on the database's clock, which all workers share (see broker.now_sql).
    lease = "now() + make_interval(secs => %s)"
    reserve = (f"UPDATE {TABLE} SET worker = %s, owner = %s, lease_until = {lease}, "
               "state = 'reserved', started_at = NULL, acks_late = FALSE "
               "WHERE id = ANY(ARRAY(SELECT id FROM c WHERE NOT go)) " + returning)
    confirmed = (f" UNION ALL SELECT id{', NULL' * (CLAIMED_COLUMNS - 1)} FROM {confirm}"
                 if confirm else "")
    if not start:
        if not confirm:
            return f"{picked} {reserve}", [*params, worker, owner, float(lease_seconds)]
        return (f"{picked}, r AS ({reserve}) SELECT * FROM r{confirmed}",
                [*params, worker, owner, float(lease_seconds)])
    begin = (f"UPDATE {TABLE} SET worker = %s, owner = %s, lease_until = {lease}, "
             f"state = 'started', started_at = now(), deliveries = deliveries + 1, "
             f"acks_late = {late} WHERE id = ANY(ARRAY(SELECT id FROM c WHERE go)) " + returning)
    sql = (f"{picked}, s AS ({begin}), r AS ({reserve}) "
           f"SELECT * FROM s UNION ALL SELECT * FROM r{confirmed}")
    return sql, [*params, worker, owner, float(lease_seconds), *late_params,
                 worker, owner, float(lease_seconds)]


def _sqlite_claim(
    using: str, queues: Sequence[str], limit: int, worker: str, owner: int | None,
    lease_seconds: float, start: StartNow | None,
) -> tuple[str, list[object]]:
    # One write lock for the whole statement: no other worker sees these rows as ready.
    marks = ", ".join(["%s"] * len(queues))
    now = now_param(using)
    _, (lease_until,) = lease_sql(using, lease_seconds)
    go, go_params = _starts_now(False, start, "c.rn", "c.task_name")
    late, late_params = _among(False, "c.task_name", start.acks_late_names if start else ())
    sql = (
        f"c AS (SELECT id, task_name, row_number() OVER (ORDER BY priority DESC, id) AS rn "
        f"FROM {TABLE} WHERE state = 'ready' AND queue IN ({marks}) AND available_at <= %s "
        "ORDER BY priority DESC, id LIMIT %s) "
        f"UPDATE {TABLE} SET worker = %s, owner = %s, lease_until = %s, "
        f"state = CASE WHEN {go} THEN 'started' ELSE 'reserved' END, "
        f"started_at = CASE WHEN {go} THEN %s ELSE NULL END, "
        f"deliveries = deliveries + CASE WHEN {go} THEN 1 ELSE 0 END, "
        f"acks_late = ({go}) AND {late} "
        f"FROM c WHERE {TABLE}.id = c.id " + _SQLITE_RETURNING.format(now="%s")
    )
    params = [*queues, now, limit, worker, owner, lease_until, *go_params, *go_params, now,
              *go_params, *go_params, *late_params, now]
    return sql, params


def _among(postgres: bool, column: str, names: Sequence[str]) -> tuple[str, list[object]]:
    if not names:
        return "FALSE", []
    if postgres:
        return f"{column} = ANY(%s::text[])", [list(names)]
    return f"{column} IN ({', '.join(['%s'] * len(names))})", list(names)


def _starts_now(
    postgres: bool, start: StartNow | None, rank: str, name: str
) -> tuple[str, list[object]]:
    """The SQL condition for "mark this one started now", given the SQL of a claimed row's rank
    (1 for the first in claim order) and of its task name."""
    if not start:
        return "FALSE", []
    known, known_params = _among(postgres, name, start.names)
    short, short_params = _among(postgres, name, start.short_names)
    return (f"(({rank} <= %s AND {known}) OR ({rank} <= %s AND {short}))",
            [start.idle, *known_params, start.idle + start.queued, *short_params])


def _decoded(using: str, rows: Sequence[Sequence[object]], owner: int | None) -> list[Claimed]:
    """Claimed messages from the rows of SQLite's claim, whose text columns are bytes.

    A message whose text is not valid UTF-8 is set aside at once, its text stored again decoded
    with U+FFFD in place of the invalid bytes (in the same statement: it never runs in that
    shape), so that the admin can show it; it comes back ``unreadable``, for the worker to fail
    its task with the reason.
    """
    decoded, unreadable = [], {}
    for row in rows:
        values = list(row)
        invalid: dict[str, str] = {}
        for index, column in _TEXT_FIELDS:
            raw: bytes = values[index]  # type: ignore[assignment]
            try:
                values[index] = raw.decode()
            except UnicodeDecodeError:
                values[index] = invalid[column] = raw.decode(errors="replace")
        if invalid:
            which = " and ".join(invalid)
            reason = (f"{which} {'is' if len(invalid) == 1 else 'are'} not valid UTF-8 (stored "
                      f"again with U+FFFD in place of the invalid bytes, to be shown)")
            set_aside_unreadable(using, values[0], reason, invalid, owner)  # type: ignore[arg-type]
            unreadable[values[0]] = reason
        decoded.append(values)
    claimed = claimed_from_rows(decoded)
    if unreadable:
        for message in claimed:
            message.unreadable = unreadable.get(message.id, "")
    return claimed


def claim(
    using: str,
    queues: Sequence[str],
    limit: int,
    worker: str,
    owner: int | None,
    lease_seconds: float,
    start: StartNow | None = None,
) -> list[Claimed]:
    """Reserve up to ``limit`` ready messages from ``queues``: highest priority first, then oldest.

    Each row comes back flagged when it has expired or its task id was revoked, so the worker can
    settle it without running it, and when the claim marked it started (``start``).
    """
    if limit <= 0 or not queues:
        return []
    sql, params = claim_statement(using, queues, limit, worker, owner, lease_seconds, start)
    if vendor(using) == "postgresql":

        def run() -> list[Claimed]:
            return claimed_from_rows(sql_execute(using, sql, params, fetch=True))

    else:

        def run() -> list[Claimed]:
            # One transaction with what _decoded sets aside: rows claimed but not handed back
            # would wait for their lease to run out.
            with transaction.atomic(using=using, savepoint=False):
                return _decoded(using, sql_execute(using, sql, params, fetch=True), owner)

    return retry_if_locked(using, run)
