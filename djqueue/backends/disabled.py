"""No result backend (Celery's default): tasks run, nothing about them is kept."""

from __future__ import annotations

from collections.abc import Sequence

from ..exceptions import ResultBackendNotConfigured
from .base import ResultBackend, ResultRecord


class DisabledBackend(ResultBackend):
    enabled = False

    def ensure_chords_allowed(self) -> None:
        raise ResultBackendNotConfigured()  # a chord's body reads its header's results

    def store(self, records: Sequence[ResultRecord]) -> None:
        return None

    def get(self, task_id: str) -> ResultRecord | None:
        raise ResultBackendNotConfigured()

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        raise ResultBackendNotConfigured()

    def forget(self, task_id: str) -> None:
        raise ResultBackendNotConfigured()

    def cleanup(self) -> int | None:
        return 0
