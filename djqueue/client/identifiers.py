"""Task ids, task names and queue names as the broker's tables can hold them.

PostgreSQL refuses a text with a NUL character or longer than its ``varchar`` column; SQLite
stores either without a word. So the same call failed on one database and, on the other, wrote a
row that could not be copied to PostgreSQL, nor named on a command line. Publishing, revocation
and remote control check with :func:`check` first, before any SQL, and refuse both alike.
"""

from __future__ import annotations

from ..exceptions import InvalidIdentifier
from ..models import Message

#: The columns' lengths; the result and revocation tables hold task ids and names as long.
MAX_TASK_ID: int = Message._meta.get_field("task_id").max_length  # type: ignore[assignment]
MAX_TASK_NAME: int = Message._meta.get_field("task_name").max_length  # type: ignore[assignment]
MAX_QUEUE: int = Message._meta.get_field("queue").max_length  # type: ignore[assignment]


def check(what: str, value: object, max_length: int) -> str:
    """``value`` when it is a string the tables can hold; else :class:`InvalidIdentifier` (a
    ``ValueError``) naming ``what`` (``"task id"``, ``"task name"``, ``"queue name"``)."""
    if not isinstance(value, str):
        raise InvalidIdentifier(f"A {what} must be a string, not {value!r}")
    if "\x00" in value:
        raise InvalidIdentifier(f"The {what} {value!r} contains a NUL character")
    if len(value) > max_length:
        raise InvalidIdentifier(
            f"The {what} {value[:40]!r}… is {len(value)} characters long; at most {max_length} fit"
        )
    return value
