"""Revoking tasks: revocations are rows, so every worker obeys them, including ones started later.

A revoked task that is still waiting never runs (its state becomes ``REVOKED``). With
``terminate=True`` a worker running it stops it with ``signal`` (prefork pool only). Workers
check revocations when they claim messages and about once a second for what they hold.
"""

from __future__ import annotations

import logging
import signal as signals
from collections.abc import Iterable

from django.db import connections

from . import identifiers
from ..models import Revocation

logger = logging.getLogger("djqueue.revocation")


def signal_number(name: str | int, *, default: int | None = None) -> int:
    """``"SIGTERM"``, ``"TERM"`` or ``15`` -> 15; raises ValueError for an unknown signal.

    With ``default``, an unknown signal gives ``default`` and a warning instead: for a name read
    from a revocation row, which anything with access to the database may have written. The
    task was still revoked and asked to stop, so the worker stops it the usual way rather than
    leave it running (or, as an uncaught error, stop the whole worker).
    """
    try:
        if isinstance(name, int):
            return int(signals.Signals(name))
        text = name.upper()
        return int(signals.Signals[text if text.startswith("SIG") else f"SIG{text}"])
    except (KeyError, ValueError, AttributeError):
        if default is None:
            raise ValueError(f"Unknown signal {name!r}") from None
        logger.warning("Unknown signal %r in a revocation; sending %s instead.", name,
                       signals.Signals(default).name)
        return default


def revoke(
    task_ids: str | Iterable[str],
    terminate: bool = False,
    signal: str | int = "SIGTERM",
    using: str = "default",
) -> list[str]:
    """Revoke one or more task ids; returns the ids. Revoking twice keeps the strongest request.

    A task id the table cannot hold (see :mod:`djqueue.client.identifiers`) raises
    :class:`~djqueue.exceptions.InvalidIdentifier` before anything is written.
    """
    ids = [task_ids] if isinstance(task_ids, str) else [str(t) for t in task_ids]
    for task_id in ids:
        identifiers.check("task id", task_id, identifiers.MAX_TASK_ID)
    name = signals.Signals(signal_number(signal)).name
    # MySQL's upsert names no conflict target (it takes any unique key): Django refuses one.
    target = connections[using].features.supports_update_conflicts_with_target
    Revocation.objects.using(using).bulk_create(
        [Revocation(task_id=task_id, terminate=terminate, signal=name) for task_id in ids],
        update_conflicts=terminate,
        ignore_conflicts=not terminate,
        unique_fields=["task_id"] if terminate and target else None,
        update_fields=["terminate", "signal"] if terminate else None,
    )
    return ids
