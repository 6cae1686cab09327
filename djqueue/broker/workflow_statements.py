"""The statements of workflows' rows (:mod:`djqueue.workflow.models`), the same on every
database: chords' counters and the segments of long chains, written with the hooks of
:class:`~djqueue.broker.statements.Statements`. :class:`WorkflowStatements` is the base of
:class:`~djqueue.broker.base.Operations`.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections

from .rows import CHAIN_SEGMENT_TABLE, CHORD_TABLE, ChordRow, SegmentRow
from .statements import Statements


class WorkflowStatements(Statements):
    """Chords' and chain segments' rows on the database alias ``using``."""

    def _insert_rows(self, sql: str, values: list[tuple[object, ...]]) -> None:
        def run() -> None:
            with connections[self.using].cursor() as cursor:
                cursor.executemany(sql, values)

        self.retrying(run)

    # Chords: written with their messages, counted down by the rounds that finish their
    # members, deleted by the round that takes the count to zero.

    def create_chords(self, rows: Sequence[ChordRow]) -> None:
        """Write chords' counter rows (in the caller's transaction)."""
        now = self.now_param()
        self._insert_rows(
            f"INSERT INTO {CHORD_TABLE} (id, pending, total, failure, body, members, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(row.id, row.pending, row.pending, "", row.body, row.members, now) for row in rows])

    def count_down_chord(self, chord_id: str, finished: int, failure: str) -> int | None:
        """``finished`` members of a chord are done (``failure``: the first one's ChordError
        text, or ``""``); the members still pending, None when there is no such chord. The row
        stays locked until the transaction ends, so concurrent rounds count down one after the
        other and exactly one of them sees zero."""
        rows = self._returning(
            f"UPDATE {CHORD_TABLE} SET pending = pending - %s, failure = CASE WHEN failure = '' "
            "THEN %s ELSE failure END WHERE id = %s RETURNING pending",
            [finished, failure, chord_id])
        return int(rows[0][0]) if rows else None  # type: ignore[call-overload]

    def finish_chord(self, chord_id: str) -> tuple[str, str, str] | None:
        """Delete a chord whose count reached zero; its ``(failure, body, members)``."""
        rows = self._returning(
            f"DELETE FROM {CHORD_TABLE} WHERE id = %s RETURNING failure, body, members", [chord_id])
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    # Chain segments: written with the chain's first message, read by the worker that reaches
    # one, deleted by the round that writes the message planned from it.

    def create_chain_segments(self, rows: Sequence[SegmentRow]) -> None:
        """Write the segments of long chains (in the caller's transaction)."""
        now = self.now_param()
        self._insert_rows(
            f"INSERT INTO {CHAIN_SEGMENT_TABLE} (id, content_type, steps, created_at) "
            "VALUES (%s, %s, %s, %s)",
            [(row.id, row.content_type, row.steps, now) for row in rows])

    def chain_segment(self, segment_id: str) -> tuple[str, str] | None:
        """A segment's ``(content type, steps)``, None when there is no such segment."""
        def run() -> tuple[str, str] | None:
            with connections[self.using].cursor() as cursor:
                cursor.execute(f"SELECT content_type, steps FROM {CHAIN_SEGMENT_TABLE} "
                               "WHERE id = %s", [segment_id])
                row = cursor.fetchone()
                return None if row is None else (str(row[0]), str(row[1]))

        return self.retrying(run)

    def delete_chain_segments(self, ids: Sequence[str]) -> None:
        """Delete segments whose steps were planned (in the transaction that writes them)."""
        where, params = self.one_of("id", ids, "text")
        self._update(f"DELETE FROM {CHAIN_SEGMENT_TABLE} WHERE {where}", params)
