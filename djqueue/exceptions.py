"""djqueue's exceptions. Every error djqueue raises derives from :class:`DjqueueError`."""

from __future__ import annotations

from typing import Any


class DjqueueError(Exception):
    """Root of djqueue's own errors."""


class ImproperlyConfigured(DjqueueError):
    """A setting or option has a value djqueue cannot use."""


class InvalidRateLimit(ImproperlyConfigured, ValueError):
    """A rate limit that is not ``"N/s"``, ``"N/m"``, ``"N/h"``, a number, ``None`` or 0."""


class InvalidIdentifier(DjqueueError, ValueError):
    """A task id, task name or queue name the broker's tables cannot hold: one with a NUL
    character, or longer than its column (see :mod:`djqueue.client.identifiers`)."""


class MessageTooLarge(DjqueueError, ValueError):
    """A message larger than the broker database takes in one statement (on MySQL and MariaDB:
    its server's ``max_allowed_packet``). Nothing of it was written."""


class NotRegistered(DjqueueError, KeyError):
    """No task of that name is registered in this process."""

    def __str__(self) -> str:
        return f"Task of kind {self.args[0]!r} is not registered in this process"


class QueueNotFound(DjqueueError, KeyError):
    """A message was routed to a queue that ``CELERY_QUEUES`` does not list, and
    ``CELERY_CREATE_MISSING_QUEUES`` is off."""

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateTask(DjqueueError):
    """A unique call whose key another message holds (``on_duplicate="raise"``); ``task_id`` is
    that message's task id (None: the key kept changing hands, a call may try again)."""

    def __init__(self, task_name: str, key: str, task_id: str | None) -> None:
        super().__init__(task_name, key, task_id)
        self.task_name, self.key, self.task_id = task_name, key, task_id

    def __str__(self) -> str:
        if self.task_id is None:
            return f"The unique key {self.key!r} of {self.task_name} kept changing hands"
        return f"{self.task_name} with unique key {self.key!r} is already queued: {self.task_id}"


class TimeoutError(DjqueueError):  # noqa: A001 - Celery's name, on purpose
    """``AsyncResult.get(timeout=...)`` ran out of time."""


class ResultBackendNotConfigured(DjqueueError, NotImplementedError):
    """Results were asked for but ``CELERY_RESULT_BACKEND`` is not set."""

    def __init__(self) -> None:
        super().__init__(
            "No result backend is configured, so task states and results are not stored. "
            "Set CELERY_RESULT_BACKEND = \"database\" in your Django settings to keep them "
            "as rows of djqueue's TaskResult model."
        )


class SerializationError(DjqueueError):
    """Base for encode and decode failures."""


class EncodeError(SerializationError):
    """Arguments or a return value could not be serialised."""


class DecodeError(SerializationError):
    """A stored payload could not be decoded (corrupt, or a content type not accepted)."""


class ContentDisallowed(DecodeError):
    """The payload's content type is not in ``CELERY_ACCEPT_CONTENT``."""


class WorkerLostError(DjqueueError):
    """The process running the task died or was stopped before the task finished."""


class TaskRevokedError(DjqueueError):
    """The task was revoked or expired and will not run."""


class RemoteTaskError(DjqueueError):
    """Stand-in for an exception raised by a task whose class cannot be found here.

    Its class name and module are those of the original exception; ``original_type``
    names it in full.
    """

    original_type: str = ""

    def __str__(self) -> str:
        message = ", ".join(str(arg) for arg in self.args)
        return f"{message} (raised as {self.original_type}, which is not importable here)"



class TaskPredicate(DjqueueError):
    """Base of the exceptions a task raises to tell the worker what to do with its message
    (:class:`Retry`, :class:`Ignore`, :class:`Reject`), as in Celery."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry()``: the worker schedules the next attempt instead of failing.

    ``raise self.retry(...)`` and a bare ``self.retry(...)`` both work, as in Celery.
    """

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: Any = None,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or f"Retry at {when}: {exc!r}")
        self.exc = exc
        self.when = when
        self.call_args = args
        self.call_kwargs = kwargs


class Ignore(TaskPredicate):
    """Raised by a task: its message is acknowledged, no state is stored and no handler runs
    (``on_success``, ``on_failure``, ``after_return``); the worker logs ``Task name[id] ignored``.
    With ``update_state()`` first, a task can leave a state of its own choosing."""


class Reject(TaskPredicate):
    """Raised by a task to reject its message. With ``acks_late`` and ``requeue=True`` the
    message goes back to the queue (beware of a loop: nothing bounds it, as in Celery); with
    ``acks_late`` and no requeue it is set aside (state ``rejected``, the broker's dead letter).
    Without ``acks_late`` the message was acknowledged when the task started, as in Celery, so it
    is gone either way. Unless it went back to the queue the task's state is FAILURE, with this
    exception, so no caller waits for it for ever."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        super().__init__(reason, requeue)
        self.reason = reason
        self.requeue = requeue

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class MaxRetriesExceededError(DjqueueError):
    """A task asked to retry more often than ``max_retries`` allows."""


class SoftTimeLimitExceeded(DjqueueError):
    """Raised inside a task when its soft time limit has passed; the task may clean up."""


class TimeLimitExceeded(DjqueueError):
    """The task ran past its hard time limit and its process was killed."""


class ChordError(DjqueueError):
    """A chord's body did not run because a task of its header failed (Celery's name); the
    message names the task: ``Dependency <task id> raised <exception>``."""


class IncompleteStream(DjqueueError):
    """``AsyncResult.iterdeps()`` (and so ``collect()``) met a result of the graph that is not
    ready yet, whose children are not known (Celery's name); with ``intermediate=True`` the walk
    goes on without them."""


class Replaced(DjqueueError):
    """Raised by :meth:`Task.replace` in a worker: the task ends without a result of its own, and
    the worker writes the replacement (which takes over its task id) in the round that
    acknowledges it."""

    def __init__(self, sig: object) -> None:
        super().__init__("Replaced by a new task")
        self.sig = sig
