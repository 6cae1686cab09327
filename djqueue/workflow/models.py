"""A chord's state as a row: how many header members are still to finish, and what to run then.

``models.py`` imports this so Django finds it. The row is written with the chord's messages, in
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
