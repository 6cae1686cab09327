"""What ``inspect()`` replies, in Celery 5's shapes (the handlers are in
:mod:`djqueue.worker.control`; ``clock`` and ``report`` are here).

- a request (``active``, ``reserved``, ``scheduled``'s ``request``, ``query_task``): ``id``,
  ``name``, ``args`` (a list) and ``kwargs`` (a dict) as the task receives them (values JSON
  cannot carry shown by their ``repr``), ``type``, ``hostname``, ``time_start`` (Unix time the
  task started, ``None`` while reserved), ``acknowledged`` (False: a message is acknowledged
  when its task ends), ``delivery_info`` (``exchange``, ``routing_key``, ``priority``,
  ``redelivered``), ``worker_pid`` (the process running it);
- ``stats()["pool"]``: ``implementation``, ``max-concurrency``, ``max-tasks-per-child``,
  ``processes`` (pool process ids), ``timeouts`` (soft, hard); also ``clock``, ``rusage`` and
  ``total`` (task name → tasks of that name the pool accepted since the worker started);
- ``active_queues``: one dict per queue with Celery's queue fields (no exchange of its own: the
  queue's name is its exchange and routing key);
- ``clock``: ``{"clock": n}``. Celery's is a Lamport clock of its messages; djqueue's logical
  clock is the id of the latest control command the worker has seen, which every worker reads
  from the same table, so the values of the workers compare;
- ``report``: ``{"ok": text}``, the versions and settings a bug report needs.
"""

from __future__ import annotations

import json
import os
import platform
import resource
from typing import TYPE_CHECKING, Any

import django
from .. import __version__
from django.db.models import Max

from ..models import ControlCommand, Message
from ..serialization import loads
from .control_arguments import ControlError

if TYPE_CHECKING:
    from .loop import Worker

#: ``registered()`` shows these task attributes when no others are asked for (Celery's default
#: list, of the attributes djqueue's tasks have).
DEFAULT_TASK_INFO_ITEMS = ("rate_limit",)


def as_data(value: Any) -> Any:
    """``value`` if JSON carries it as it is, else its ``repr``."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def request_info(worker: Worker, message: Any, pid: int | None = None,
                 started: float | None = None) -> dict[str, Any]:
    """One held message (a claimed row or a pool job) as Celery's ``Request.info()``."""
    try:
        payload = loads(message.body, message.content_type,
                        worker.app.conf.CELERY_ACCEPT_CONTENT or [])
        args = [as_data(a) for a in payload.get("args", ())]
        kwargs = {str(k): as_data(v) for k, v in payload.get("kwargs", {}).items()}
        shadow = (payload.get("headers") or {}).get("shadow")  # Celery's "name": the call's
    except Exception:  # noqa: BLE001 - shown, not run: any undecodable body is reported as such
        args, kwargs, shadow = "<undecodable>", "<undecodable>", None
    task_id = message.task_id
    return {
        "id": task_id, "name": shadow or message.task_name, "args": args, "kwargs": kwargs,
        "type": message.task_name, "hostname": worker.hostname, "time_start": started,
        "acknowledged": False, "worker_pid": pid,
        "delivery_info": {"exchange": "", "routing_key": message.queue,
                          "priority": message.priority,
                          "redelivered": message.deliveries > 1 or message.retries > 0},
    }


def held(worker: Worker) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every message this worker holds: ``{task_id: ("active" | "reserved", info)}``."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for message in worker.reserved_messages():
        found[message.task_id] = ("reserved", request_info(worker, message))
    running = worker.pool.running()
    if running:
        pids = worker.pool.job_pids()
        started = dict(Message.objects.using(worker.using)
                       .filter(id__in=[job.message_id for job in running])
                       .values_list("id", "started_at"))
        for job in running:
            at = started.get(job.message_id)
            found[job.task_id] = ("active", request_info(
                worker, job, pids.get(job.message_id), at.timestamp() if at else None))
    return found


def registered(worker: Worker, taskinfoitems: object = None) -> list[str]:
    """Task names, each followed by the asked attributes that are set: ``"tasks.add
    [rate_limit=10/s]"``."""
    if taskinfoitems is not None and (not isinstance(taskinfoitems, list) or not all(
            isinstance(item, str) and item.isidentifier() for item in taskinfoitems)):
        raise ControlError(f"taskinfoitems must be a list of task attribute names, not "
                           f"{taskinfoitems!r}")
    items = taskinfoitems or DEFAULT_TASK_INFO_ITEMS
    names = []
    overrides = worker.throttle.overrides  # rate limits set at run time win, as in Celery
    for name, task in sorted(worker.app.tasks.items()):
        values = {item: overrides.get(name, task.rate_limit) if item == "rate_limit"
                  else getattr(task, item, None) for item in items}
        shown = [f"{item}={value}" for item, value in values.items() if value is not None]
        names.append(f"{name} [{' '.join(shown)}]" if shown else name)
    return names


def pool(worker: Worker) -> dict[str, Any]:
    pool = worker.pool
    return {
        "implementation": worker.pool_name, "max-concurrency": worker.concurrency,
        "max-tasks-per-child": pool.max_tasks_per_child or "N/A",
        "processes": pool.processes(),
        "timeouts": [worker.soft_time_limit or 0, worker.time_limit or 0],
    }


def rusage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {field: getattr(usage, field) for field in (
        "ru_utime", "ru_stime", "ru_maxrss", "ru_minflt", "ru_majflt", "ru_inblock",
        "ru_oublock", "ru_nvcsw", "ru_nivcsw")}


def queue_info(name: str) -> dict[str, Any]:
    """Queue ``name`` with the fields of Celery's ``active_queues`` reply."""
    exchange = {"name": name, "type": "direct", "arguments": None, "durable": True,
                "passive": False, "auto_delete": False, "delivery_mode": None,
                "no_declare": False}
    return {
        "name": name, "exchange": exchange, "routing_key": name, "queue_arguments": None,
        "binding_arguments": None, "consumer_arguments": None, "durable": True,
        "exclusive": False, "auto_delete": False, "no_ack": False, "alias": None,
        "bindings": [], "no_declare": None, "expires": None, "message_ttl": None,
        "max_length": None, "max_length_bytes": None, "max_priority": None,
    }


def clock(worker: Worker) -> dict[str, int]:
    latest = ControlCommand.objects.using(worker.using).aggregate(latest=Max("id"))["latest"]
    return {"clock": latest or 0}


def report(worker: Worker) -> dict[str, str]:
    conf = worker.app.conf
    uname = platform.uname()
    text = "\n".join([
        f"software -> djqueue:{__version__} django:{django.get_version()} "
        f"py:{platform.python_version()}",
        f"platform -> system:{uname.system} arch:{' '.join(platform.architecture())} "
        f"kernel version:{uname.release} imp:{platform.python_implementation()}",
        "loader   -> django",
        f"settings -> transport:django://{worker.using} "
        f"results:{conf.CELERY_RESULT_BACKEND or 'disabled'}",
        f"pid      -> {os.getpid()} pool:{worker.pool_name} concurrency:{worker.concurrency}",
    ])
    return {"ok": text + "\n"}
