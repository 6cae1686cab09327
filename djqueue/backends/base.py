"""The interface every result backend implements."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self

    from ..conf import Settings


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
    queue: str = ""
    #: The workers of each attempt, oldest first, one a line, once the task was retried.
    workers: str = ""


class ResultBackend:
    """Stores and reads task states. Subclasses set the capability flags and implement the methods.

    Every backend passes the shared contract test (``tests/test_backends.py``).
    """

    #: Whether this backend keeps results at all. When False, reading a state raises
    #: :class:`~djqueue.exceptions.ResultBackendNotConfigured` and storing does nothing.
    enabled: bool = True

    def __init__(self, using: str = "default", expires: float | None = None) -> None:
        #: The database alias (backends that keep results in the database).
        self.using = using
        #: Seconds a finished result is kept (``CELERY_TASK_RESULT_EXPIRES``); None for ever.
        self.expires = expires

    @classmethod
    def from_conf(cls, conf: Settings) -> Self:
        """The backend configured by the app's settings."""
        return cls(using=conf.broker_alias, expires=conf.result_expires)

    def ensure_chords_allowed(self) -> None:
        """Celery's check before a chord is sent: its body reads the header's results, so a
        chord needs a backend that keeps them."""

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

    def results_of(self, task_ids: Sequence[str]) -> dict[str, tuple[str, str, str | None]]:
        """``(state, content type, encoded result)`` of those ``task_ids`` that have a record,
        by id: what a chord's body is called with (a store may answer this for less than
        :meth:`get_many`)."""
        return {task_id: (record.state, record.content_type, record.result)
                for task_id, record in self.get_many(task_ids).items()}

    def forget(self, task_id: str) -> None:
        """Remove what is stored of ``task_id``."""
        raise NotImplementedError

    def cleanup(self) -> int | None:
        """Remove results finished more than ``expires`` seconds ago; return how many, or None
        when the store expires results by itself."""
        raise NotImplementedError
