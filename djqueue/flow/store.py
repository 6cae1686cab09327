"""Paused queues as rows: what ``celery control pause_queue``/``resume_queue`` and the admin write
and every worker reads (at its start, on those commands, and once a minute)."""

from __future__ import annotations

from ..models import PausedQueue


def pause(queue: str, using: str) -> bool:
    """Store ``queue`` as paused; False if it already was."""
    return PausedQueue.objects.using(using).get_or_create(queue=queue)[1]


def resume(queue: str, using: str) -> bool:
    """Remove ``queue``'s pause; False if it was not paused."""
    return PausedQueue.objects.using(using).filter(queue=queue).delete()[0] > 0


def paused_queues(using: str) -> frozenset[str]:
    """The queues paused now."""
    return frozenset(PausedQueue.objects.using(using).values_list("queue", flat=True))
