"""The example project's settings plus the benchmark's task module, with DEBUG off as in
production: with DEBUG on, Django logs every statement and djqueue's enqueue takes Django's
slower cursor so that the log sees it."""

from example_project.settings import *  # noqa: F403

DEBUG = False
CELERY_IMPORTS = ("tasks", "bench.tasks")

