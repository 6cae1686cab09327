"""``task.request``: what a running task knows about its own call, under Celery's names.

The worker builds a :class:`Context` from the message: its row (id, queue, retries, time limits,
the worker's node name), the canvas's workflow fields of its body (``parent_id``, ``root_id``,
``group``, ``chord``, ``callbacks``, …) and the body's optional ``headers``, a dict keyed by
Celery's message-header names (``shadow``, ``ignore_result``, custom headers given with
``apply_async(headers=…)``, …); see :mod:`djqueue.worker.lifecycle_hooks`. Fields no message gave
read their class default, so a plain call pays for no field it does not have.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any


class Context:
    """The request of one call. Every key of the message's headers is an attribute, as in Celery;
    those that are not Celery's own names are also collected in :attr:`headers`."""

    id: str | None = None
    task: str | None = None
    args: list[Any] | tuple[Any, ...] | None = None
    kwargs: dict[str, Any] | None = None
    retries: int = 0
    is_eager: bool = False
    called_directly: bool = True
    eta: str | None = None
    expires: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] | None = None
    #: ``(hard, soft)`` time limits in seconds, as Celery's ``timelimit`` header.
    timelimit: tuple[float | None, float | None] | None = None
    # Workflow fields (filled by the canvas: chains, chords, groups, callbacks).
    parent_id: str | None = None
    root_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: Any = None
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    # Delivery fields.
    correlation_id: str | None = None
    reply_to: str | None = None
    origin: str | None = None
    ignore_result: bool = False
    shadow: str | None = None
    replaced_task_nesting: int = 0
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] | None = None
    logfile: str | None = None
    loglevel: int | None = None
    utc: bool = True
    #: djqueue's own header (:data:`WORKERS_HEADER`): the node names of the workers of the
    #: earlier attempts of a retried task, oldest first; None on a first attempt.
    workers: list[str] | None = None
    #: Custom headers (``apply_async(headers=…)``): the message's headers that are not
    #: Celery's own fields; None when there are none.
    headers: dict[str, Any] | None = None

    def __init__(self, message_headers: Mapping[str, Any] | None = None, /,
                 **fields: Any) -> None:
        if message_headers:
            self.__dict__.update(message_headers)
            custom = {key: value for key, value in message_headers.items()
                      if key not in CELERY_FIELDS}
            self.headers = custom or None
        self.__dict__.update(fields)

    @functools.cached_property
    def properties(self) -> dict[str, Any]:
        """The message's properties as Celery names them (made on first use)."""
        return {"correlation_id": self.correlation_id, "reply_to": self.reply_to,
                "priority": (self.delivery_info or {}).get("priority")}

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.update(*args, **kwargs)

    @property
    def time_limit(self) -> float | None:
        """The hard time limit (the first of :attr:`timelimit`)."""
        return self.timelimit[0] if self.timelimit else None

    @property
    def soft_time_limit(self) -> float | None:
        """The soft time limit (the second of :attr:`timelimit`)."""
        return self.timelimit[1] if self.timelimit else None

    def __repr__(self) -> str:
        return f"<Context: {vars(self)!r}>"


#: The header in which a retried task's message names the workers of its earlier attempts
#: (written by the worker with the retry; Django's ``TaskResult.worker_ids``).
WORKERS_HEADER = "workers"

#: Celery's own request fields (with ``lang``, ``argsrepr`` and ``kwargsrepr``, which Celery's
#: messages also carry): any other header is a custom one.
CELERY_FIELDS = frozenset(
    {name for name in vars(Context) if not name.startswith("_")}
    | {"lang", "argsrepr", "kwargsrepr", "taskset"}
)
