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
        "-- ******* ---- .> task events: "
        + ("ON" if worker.events.enabled else "OFF (enable -E to monitor tasks in this worker)"),
        "--- ***** ----- ",
        " -------------- [queues]",
    ]
    lines += [f"                .> {queue}" for queue in worker.queues]
    lines += ["", "[tasks]"]
    lines += [f"  . {name}" for name in sorted(worker.app.tasks)
              if not builtins.is_builtin(name)] or ["  (none registered)", "",
                                                   *NO_TASKS.splitlines()]
    return "\n".join(lines) + "\n"


#: What the banner says when no task is registered: where a worker looks for tasks, so that a
#: new user adds the missing line before sending the first message, not after it is refused.
NO_TASKS = """\
No task is registered, so this worker can run none. A worker imports the tasks.py module of every
app in INSTALLED_APPS and the modules listed in CELERY_IMPORTS; it never imports a module because
a message names it. Add one of:
  - for a tasks.py beside manage.py:   CELERY_IMPORTS = ("tasks",)   in your settings
  - for tasks in an app:               the app's tasks.py, and the app in INSTALLED_APPS
  - for another module:                its dotted path in CELERY_IMPORTS
then start the worker again: its [tasks] list shows what it found."""
