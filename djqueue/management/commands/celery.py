"""``python manage.py celery <command>``: parses arguments and hands off to :mod:`djqueue.cli`."""

from __future__ import annotations

import sys
from typing import Any

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import checks, cli
from ...exceptions import ImproperlyConfigured


class Command(BaseCommand):
    help = "Celery's command line for djqueue: worker and more."
    # djqueue's settings checks and the models' checks, which a worker depends on; not the
    # URL, admin, template or security checks of a web server. Running those would import the
    # URL configuration (and the views it names) into every worker process, where nothing uses
    # them, and prefork children inherit whatever the worker holds when it forks.
    requires_system_checks = ["djqueue", Tags.models]

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", metavar="command", required=True)
        for name in cli.SUBCOMMANDS:
            module = cli.load(name)
            module.add_arguments(commands.add_parser(name, help=module.HELP))

    def handle(self, *args: Any, **options: Any) -> None:
        refusal = checks.broker_refusal()
        if refusal:
            raise CommandError(refusal)
        try:
            status = cli.load(options["command"]).run(options, self.stdout, self.stderr)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        if status:
            sys.exit(status)
