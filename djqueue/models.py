"""The message table (the broker), results, worker rows, revocations and remote control;
beat's tables are in ``beat_models``."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from . import states
from .beat.models import BeatState, PeriodicTask, PeriodicTaskRun  # noqa: F401 - beat's models
from .events.models import Event  # noqa: F401 - the event stream's table
from .flow.models import FlowGate, PausedQueue, UniqueTask  # noqa: F401 - flow control's models
from .stats.models import TaskStat  # noqa: F401 - the task statistics (admin chart, metrics)
from .workflow.models import ChainSegment, Chord  # noqa: F401 - chords' counters, long chains


class Message(models.Model):
    """One task message. Rows leave this table when their task finishes, so it stays small."""

    class State(models.TextChoices):
        READY = "ready", "ready"
        RESERVED = "reserved", "reserved"
        STARTED = "started", "started"
        REJECTED = "rejected", "rejected"

    id = models.BigAutoField(primary_key=True)
    # task_id and task_name here, in TaskResult and Revocation.task_id are COLLATE "C" on
    # PostgreSQL (migration 0003), and with queue utf8mb4_bin on MySQL (0008), which the model
    # state does not say: keep it in any migration that alters them.
    task_id = models.CharField("task id", max_length=255)
    task_name = models.CharField("task name", max_length=255)
    queue = models.CharField(max_length=200, default="celery")
    priority = models.PositiveSmallIntegerField(
        default=0, help_text="0–255; higher numbers run first."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.READY)
    available_at = models.DateTimeField(
        "available at", help_text="Not claimed before this time (countdown/eta)."
    )
    expires = models.DateTimeField(
        null=True, blank=True, help_text="Never run after this time; marked REVOKED instead."
    )
    content_type = models.CharField("content type", max_length=64, default="application/json")
    body = models.TextField(help_text="Encoded arguments and call options.")
    retries = models.PositiveIntegerField(default=0)
    deliveries = models.PositiveIntegerField(
        default=0,
        help_text="Times this attempt was started. An acks_late message whose worker is lost "
        "goes back to the queue until this reaches DJQUEUE_MAX_DELIVERIES, then is set aside.",
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)
    worker = models.CharField(
        max_length=255, blank=True, default="", help_text="Node name of the worker holding it."
    )
    owner = models.BigIntegerField(
        null=True, blank=True, help_text="Id of the worker row (process) holding it."
    )
    acks_late = models.BooleanField(
        "acks late", default=False,
        help_text="Set when started: if its worker dies, run it again instead of failing it.",
    )
    started_at = models.DateTimeField("started at", null=True, blank=True)
    lease_until = models.DateTimeField(
        "lease until", null=True, blank=True,
        help_text="Its worker's heartbeat extends this; past it, any worker may recover the message.",
    )
    time_limit = models.FloatField(null=True, blank=True, help_text="Per-call hard time limit (s).")
    soft_time_limit = models.FloatField(
        null=True, blank=True, help_text="Per-call soft time limit (s)."
    )
    error = models.TextField(
        blank=True, default="", help_text="Why a rejected message was set aside."
    )
    flow_key = models.CharField(
        "concurrency key", max_length=255, null=True, blank=True, default=None,
        help_text="Of a task with a concurrency limit: at most that many of one key run at once.",
    )

    class Meta:
        db_table = "djqueue_message"
        verbose_name = "message"
        # On MySQL (no partial indexes) migration 0008 rebuilds these with `state` first and
        # drops djqueue_msg_rejected: a migration that changes them must leave MySQL's alone.
        indexes = [
            models.Index(
                fields=["queue", "-priority", "id"],
                condition=Q(state="ready"),
                name="djqueue_msg_ready",
            ),
            # Partial indexes over the states that only publishing and give-backs write: a
            # claim moves a row out of them at no index cost. Waiting and scheduled messages (the
            # admin's counts, the oldest waiting, and idle workers asking when the next delayed
            # message is due: broker.next_due); messages set aside.
            models.Index(fields=["queue", "available_at"], condition=Q(state="ready"),
                         name="djqueue_msg_waiting"),
            models.Index(fields=["queue"], condition=Q(state="rejected"), name="djqueue_msg_rejected"),
            # Held messages (few: what workers have in hand): recovery by lease, heartbeats by
            # owner, the admin's counts.
            models.Index(
                fields=["lease_until"],
                condition=Q(state__in=["reserved", "started"]),
                name="djqueue_msg_held",
            ),
            # Plain indexes: db_index=True would add a second, LIKE-only index on PostgreSQL
            # that every insert pays for and no query uses.
            models.Index(fields=["task_name"], name="djqueue_msg_task_name"),
            # Started messages of concurrency-limited tasks, counted per key when one more is
            # admitted (djqueue.broker.flow); other messages never enter it.
            models.Index(fields=["task_name", "flow_key"],
                         condition=Q(state="started", flow_key__isnull=False),
                         name="djqueue_msg_flow_running"),
        ]
        # One message per task id: the same id sent twice is written once (publishing skips
        # the second). Unique instead of the plain index it replaces: the same cost per insert.
        constraints = [models.UniqueConstraint(fields=["task_id"], name="djqueue_msg_task_id")]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}]"


class TaskResult(models.Model):
    """The state and outcome of one task (``CELERY_RESULT_BACKEND = "database"``)."""

    task_id = models.CharField("task id", max_length=255)
    task_name = models.CharField("task name", max_length=255, blank=True, default="")
    state = models.CharField(
        max_length=50,
        default=states.PENDING,
        choices=[(s, s) for s in sorted(states.ALL_STATES)],
    )
    content_type = models.CharField("content type", max_length=64, default="application/json")
    result = models.TextField(
        null=True, blank=True, help_text="Encoded return value, or the exception for failures."
    )
    traceback = models.TextField(null=True, blank=True)
    args = models.TextField(blank=True, default="", help_text="repr() of the positional arguments.")
    kwargs = models.TextField(blank=True, default="", help_text="repr() of the keyword arguments.")
    worker = models.CharField(max_length=255, blank=True, default="")
    workers = models.TextField(
        "workers of its attempts", blank=True, default="",
        help_text="Node names of the workers of each attempt, oldest first, one a line, once it "
                  "was retried (blank: one attempt, by its worker).")
    queue = models.CharField(max_length=200, blank=True, default="", help_text="Queue it ran from.")
    runtime = models.FloatField(null=True, blank=True, help_text="Seconds the task ran.")
    date_created = models.DateTimeField("created", auto_now_add=True)
    date_done = models.DateTimeField("done", null=True, blank=True, db_index=True)

    class Meta:
        db_table = "djqueue_taskresult"
        verbose_name = "task result"
        # A constraint and plain indexes rather than unique=True/db_index=True: on PostgreSQL
        # those add a second, LIKE-only index per column, which every stored result pays for
        # and no query uses (the admin searches task ids by exact match).
        constraints = [models.UniqueConstraint(fields=["task_id"], name="djqueue_result_task_id")]
        indexes = [
            models.Index(fields=["task_name"], name="djqueue_result_task_name"),
            models.Index(fields=["state"], name="djqueue_result_state"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] {self.state}"


class WorkerNode(models.Model):
    """One worker process, as it reports itself through its heartbeat."""

    hostname = models.CharField("node name", max_length=255, db_index=True)
    pid = models.IntegerField()
    host = models.CharField(max_length=255, blank=True, default="",
                            help_text="The machine it runs on (its host name).")
    queues = models.TextField(help_text="Comma-separated queues it consumes.")
    pool = models.CharField(max_length=20)
    concurrency = models.PositiveIntegerField()
    started_at = models.DateTimeField("started", auto_now_add=True)
    heartbeat_at = models.DateTimeField("last heartbeat", db_index=True)
    stopped_at = models.DateTimeField(
        "stopped", null=True, blank=True, help_text="Set by a clean shutdown."
    )
    lost_at = models.DateTimeField(
        "lost", null=True, blank=True,
        help_text="Set when another worker found its heartbeat too old and recovered its messages.",
    )
    processed = models.PositiveBigIntegerField(default=0, help_text="Tasks it has finished.")
    active = models.TextField(blank=True, default="", help_text="Tasks running at the last heartbeat.")

    class Meta:
        db_table = "djqueue_worker"
        verbose_name = "worker"

    def __str__(self) -> str:
        return f"{self.hostname} (pid {self.pid})"


class Revocation(models.Model):
    """A revoked task id. Kept in the database so every worker, including later ones, obeys it."""

    task_id = models.CharField("task id", max_length=255, unique=True)
    terminate = models.BooleanField(default=False, help_text="Also stop it if it is running.")
    signal = models.CharField(max_length=20, default="SIGTERM")
    created_at = models.DateTimeField("revoked at", auto_now_add=True, db_index=True)

    class Meta:
        db_table = "djqueue_revocation"
        verbose_name = "revocation"

    def __str__(self) -> str:
        return self.task_id


class ControlCommand(models.Model):
    """A remote-control command for workers (``app.control``); workers poll for new ones."""

    name = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict, blank=True)
    destination = models.JSONField(
        null=True, blank=True, help_text="Node names that should act on it; empty means all."
    )
    reply = models.BooleanField(default=False, help_text="The sender waits for replies.")
    created_at = models.DateTimeField("created", auto_now_add=True)
    expires_at = models.DateTimeField(
        "expires", db_index=True, help_text="Workers ignore it after this; cleanup deletes it."
    )

    class Meta:
        db_table = "djqueue_control_command"
        verbose_name = "control command"

    def __str__(self) -> str:
        return f"{self.name} #{self.pk}"


class ControlReply(models.Model):
    """One worker's reply to a :class:`ControlCommand`."""

    command_id = models.BigIntegerField("command", db_index=True)
    hostname = models.CharField("node name", max_length=255)
    data = models.JSONField()
    created_at = models.DateTimeField("created", auto_now_add=True, db_index=True)

    class Meta:
        db_table = "djqueue_control_reply"
        verbose_name = "control reply"

    def __str__(self) -> str:
        return f"{self.hostname} -> #{self.command_id}"


class RateLimitOverride(models.Model):
    """A rate limit set at run time (``control rate_limit``); workers started later apply it too."""

    task_name = models.CharField("task name", max_length=255, unique=True)
    rate_limit = models.CharField(
        "rate limit", max_length=50, blank=True, default="",
        help_text="As Celery writes it (10/s, 10/m, 10/h); empty means no limit.",
    )
    updated_at = models.DateTimeField("updated", auto_now=True)

    class Meta:
        db_table = "djqueue_rate_limit_override"
        verbose_name = "rate-limit override"

    def __str__(self) -> str:
        return f"{self.task_name}: {self.rate_limit or 'no limit'}"
