"""Storing outcomes outside the worker's regular rounds, and riding out database outages.

A round that the database refuses for a value (``DataError``, ``IntegrityError``: not an outage)
is settled again one outcome at a time, and an outcome whose result is still refused fails its
task with :class:`~djqueue.exceptions.EncodeError`: a bad value never stops the worker. An outage
(``OperationalError``, ``InterfaceError``) is waited out: the same write is retried, nothing held
is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from django.db import DataError, IntegrityError, InterfaceError, OperationalError, connections

from ..backends import ResultBackend
from ..exceptions import EncodeError
from . import rounds
from .execution import Outcome, unrun

logger = logging.getLogger("djqueue.worker")

T = TypeVar("T")

DB_RETRY_MAX_PAUSE = 10.0
#: What the database says when it refuses a value of a round (as opposed to being away).
REFUSED = (DataError, IntegrityError)


def with_db_retry(using: str, operation: Callable[[], T]) -> T:
    """Run ``operation`` until the database answers, pausing longer after each failure."""
    pause = 0.1
    while True:
        try:
            return operation()
        except (OperationalError, InterfaceError) as exc:
            logger.error("Database error: %s; retrying in %.1fs", str(exc).strip(), pause)
            try:
                connections[using].close()
            except Exception:  # noqa: BLE001 - the connection is broken anyway
                pass
            time.sleep(pause)
            pause = min(pause * 2, DB_RETRY_MAX_PAUSE)


class Settler:
    """Settles outcomes in rounds of their own for one worker process (``owner``)."""

    def __init__(self, using: str, backend: ResultBackend, hostname: str, serializer: str,
                 lease_seconds: float) -> None:
        self.using = using
        self.backend = backend
        self.hostname = hostname
        self.serializer = serializer
        self.lease_seconds = lease_seconds
        self.owner: int | None = None

    def settle(self, outcomes: Sequence[Outcome]) -> int:
        """Store and acknowledge ``outcomes`` in one round (one by one if the database refuses
        it); returns how many count as processed."""
        try:
            self._run(outcomes)
        except REFUSED as exc:
            return self.settle_each(outcomes, exc)
        return rounds.processed(outcomes)

    def settle_each(self, outcomes: Sequence[Outcome], refusal: Exception) -> int:
        """Settle the outcomes of a round the database refused (``refusal``) one at a time;
        returns how many count as processed."""
        logger.error("The database refused a round (%s); settling its outcomes one by one.",
                     str(refusal).strip())
        for outcome in outcomes:
            self.settle_alone(outcome)
        return rounds.processed(outcomes)

    def _run(self, outcomes: Sequence[Outcome]) -> None:
        writes = rounds.settle(outcomes, self.hostname, self.backend.enabled)
        with_db_retry(self.using, lambda: rounds.run(self.using, self.backend, self.owner, writes,
                                                     lease_seconds=self.lease_seconds))

    def settle_alone(self, outcome: Outcome) -> None:
        """Settle one outcome of a round the database refused. If its own result is what the
        database refuses, the task fails with :class:`EncodeError` saying so; if even that is
        refused, the message is settled without a result."""
        attempts = [outcome]
        if outcome.store:
            job = outcome.job
            action = "reject" if outcome.action == "reject" else "ack"
            attempts.append(unrun(job, EncodeError(
                f"The outcome of {job.task_name}[{job.task_id}] ({outcome.state}) could not be "
                "stored: the database refused it (see the worker's log)."), self.serializer,
                action=action))
            attempts.append(unrun(job, EncodeError("unstorable outcome"), self.serializer,
                                  action=action, store=False))
        for attempt in attempts:
            try:
                self._run([attempt])
                return
            except REFUSED as exc:
                logger.error("The database refused the outcome of %s[%s]: %s",
                             outcome.job.task_name, outcome.job.task_id, str(exc).strip())
        logger.error("Could not settle %s[%s]; its message stays held by this worker.",
                     outcome.job.task_name, outcome.job.task_id)
