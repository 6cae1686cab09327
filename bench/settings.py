"""The example project's settings plus the benchmark's task module."""

from example_project.settings import *  # noqa: F403

CELERY_IMPORTS = ("tasks", "bench.tasks")

# Measured as deployed: DEBUG makes Django keep every query the worker runs.
DEBUG = False
