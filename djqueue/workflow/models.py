"""Workflows' rows: a chord's state (how many header members are still to finish, and what to run
then), and the far steps of a long chain.

``models.py`` imports this so Django finds it. A chord's row is written with its messages, in
the caller's transaction (or the worker round that launches the chord); each round that finishes
members counts them down in the transaction that stores their results; the round that takes the
count to zero deletes the row and writes the body's message (or, when a member failed, the body's
``ChordError``) in that same transaction. So the body runs exactly once whatever is killed when.
"""

from __future__ import annotations

from django.db import models


class Chord(models.Model):
    id = models.CharField("chord id", max_length=255, primary_key=True,
                          help_text="The header's group id (the members' request.group).")
    pending = models.IntegerField(help_text="Header members still to finish.")
    total = models.PositiveIntegerField(help_text="Header members in all.")
    failure = models.TextField(blank=True, default="",
                               help_text="The first member failure (the body's ChordError).")
    body = models.TextField(help_text="The body's signature, its chain and root id (JSON).")
    members = models.TextField(help_text="The members' task ids, in header order (JSON).")
    created_at = models.DateTimeField("created at", auto_now_add=True)

    class Meta:
        db_table = "djqueue_chord"
        verbose_name = "chord"

    def __str__(self) -> str:
        return f"chord {self.id} ({self.pending}/{self.total} pending)"


class ChainSegment(models.Model):
    """Steps of a long chain that its messages do not carry (see :mod:`djqueue.client.launch`).

    A message carries at most ``SEGMENT_STEPS`` of the steps that follow it, Celery's way (its
    ``chain`` field); the rest wait here, written with the chain's first message. The bottom of
    a message's stack (its first element, reached last) refers to a segment, and the bottom of a
    segment to the one after it. The round that writes the message planned from
    a segment deletes the segment in that transaction, so each is read where the chain reaches
    it and nowhere else, and a chain's messages stay small whatever its length.
    """

    id = models.CharField("segment id", max_length=255, primary_key=True)
    content_type = models.CharField("content type", max_length=64, default="application/json")
    steps = models.TextField(help_text="Signatures in Celery's chain order, the next one last; "
                             "the first may refer to the next segment (the task serializer's).")
    created_at = models.DateTimeField("created at", auto_now_add=True)

    class Meta:
        db_table = "djqueue_chainsegment"
        verbose_name = "chain segment"

    def __str__(self) -> str:
        return f"chain segment {self.id}"
