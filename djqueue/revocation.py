"""Revoking tasks: revocations are rows, so every worker obeys them, including ones started later.

A revoked task that is still waiting never runs (its state becomes ``REVOKED``). With
``terminate=True`` a worker running it stops it with ``signal`` (prefork pool only). Workers
check revocations when they claim messages and about once a second for what they hold.
"""

from __future__ import annotations

import signal as signals
from collections.abc import Iterable

from . import identifiers
from .models import Revocation


def signal_number(name: str | int) -> int:
    """``"SIGTERM"``, ``"TERM"`` or ``15`` -> 15; raises ValueError for an unknown signal."""
    if isinstance(name, int):
        return int(signals.Signals(name))
    text = name.upper()
    try:
        return int(signals.Signals[text if text.startswith("SIG") else f"SIG{text}"])
    except KeyError:
        raise ValueError(f"Unknown signal {name!r}") from None


def revoke(
    task_ids: str | Iterable[str],
    terminate: bool = False,
    signal: str | int = "SIGTERM",
    using: str = "default",
) -> list[str]:
    """Revoke one or more task ids; returns the ids. Revoking twice keeps the strongest request.

    A task id the table cannot hold (see :mod:`djqueue.identifiers`) raises
    :class:`~djqueue.exceptions.InvalidIdentifier` before anything is written.
    """
    ids = [task_ids] if isinstance(task_ids, str) else [str(t) for t in task_ids]
    for task_id in ids:
        identifiers.check("task id", task_id, identifiers.MAX_TASK_ID)
    name = signals.Signals(signal_number(signal)).name
    Revocation.objects.using(using).bulk_create(
        [Revocation(task_id=task_id, terminate=terminate, signal=name) for task_id in ids],
        update_conflicts=terminate,
        ignore_conflicts=not terminate,
        unique_fields=["task_id"] if terminate else None,
        update_fields=["terminate", "signal"] if terminate else None,
    )
    return ids
