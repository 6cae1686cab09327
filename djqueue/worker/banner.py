"""The worker's start-up banner."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from django.db import connections

from .. import __version__
from ..client import builtins

if TYPE_CHECKING:
    from .loop import Worker


def banner(worker: Worker) -> str:
    conf = worker.app.conf
    db = connections[worker.using]
    backend = conf.CELERY_RESULT_BACKEND or "disabled (set CELERY_RESULT_BACKEND = \"database\")"
    lines = [
        f" -------------- {worker.hostname} v{__version__} (djqueue)",
        f"--- ***** ----- {platform.platform(terse=True)} {platform.python_implementation()} "
        f"{platform.python_version()}",
        "-- ******* ----",
        f"- *** --- * --- .> app:         {worker.app.main}",
        f"- ** ---------- .> transport:   django://{worker.using} ({db.vendor}, "
        f"{db.settings_dict.get('NAME')})",
        f"- ** ---------- .> results:     {backend}",
        f"- *** --- * --- .> concurrency: {worker.concurrency} ({worker.pool_name})",
        "-- ******* ----",
        "--- ***** ----- ",
        " -------------- [queues]",
    ]
    lines += [f"                .> {queue}" for queue in worker.queues]
    lines += ["", "[tasks]"]
    lines += [f"  . {name}" for name in sorted(worker.app.tasks)
              if not builtins.is_builtin(name)] or ["  (none registered)"]
    return "\n".join(lines) + "\n"
