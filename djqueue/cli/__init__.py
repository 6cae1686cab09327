"""Subcommands of ``python manage.py celery``: one module each, with ``add_arguments`` and ``run``.

The management command only builds the parser from these and calls the chosen one.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

#: name -> module path; each module defines ``HELP``, ``add_arguments(parser)`` and
#: ``run(options, stdout, stderr)``.
SUBCOMMANDS: dict[str, str] = {
    "worker": "djqueue.cli.worker",
    "beat": "djqueue.cli.beat",
    "cleanup": "djqueue.cli.cleanup",
    # Remote control and monitoring.
    "control": "djqueue.cli.control",
    "inspect": "djqueue.cli.inspect",
    "status": "djqueue.cli.status",
    "purge": "djqueue.cli.purge",
    "result": "djqueue.cli.result",
    "call": "djqueue.cli.call",
    "events": "djqueue.cli.events",
    "metrics": "djqueue.cli.metrics",
}


def load(name: str) -> ModuleType:
    return import_module(SUBCOMMANDS[name])
