"""The interface every result backend implements."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class ResultRecord:
    """One task's stored state. ``result`` is encoded text (see :mod:`djqueue.serialization`)."""

    task_id: str
    state: str
    task_name: str = ""
    content_type: str = "application/json"
    result: str | None = None
    traceback: str | None = None
    args: str = ""
    kwargs: str = ""
    worker: str = ""
    runtime: float | None = None
    date_done: datetime.datetime | None = None


class ResultBackend:
    """Stores and reads task states. Subclasses set the capability flags and implement the methods."""

    #: Whether this backend keeps results at all. When False, reading a state raises
    #: :class:`~djqueue.exceptions.ResultBackendNotConfigured` and storing does nothing.
    enabled: bool = True

    def __init__(self, using: str = "default") -> None:
        self.using = using

    def store(self, records: Sequence[ResultRecord]) -> None:
        """Write (insert or replace) the records, in as few statements as the store allows."""
        raise NotImplementedError

    def get(self, task_id: str) -> ResultRecord | None:
        """The stored record, or None when nothing is known of ``task_id``."""
        raise NotImplementedError

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        """The stored records of those ``task_ids`` that have one, by id (``GroupResult`` asks
        for a whole group at once)."""
        raise NotImplementedError

    def forget(self, task_id: str) -> None:
        """Remove what is stored of ``task_id``."""
        raise NotImplementedError
