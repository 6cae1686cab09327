"""Settings of bench/django_tasks.py: the example project with DEBUG off, django-tasks-db
installed, and two ``django.tasks`` backends, djqueue's (``default``) and django-tasks-db's
(``db``). Both accept the queue ``hold``, where the benchmark parks what it enqueues until it
releases it to the workers at once."""

import os

from example_project.settings import *  # noqa: F403

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]  # noqa: F405
CELERY_IMPORTS = ("bench.django_tasks_app",)
TASKS = {
    "default": {"BACKEND": "djqueue.contrib.django_tasks.DjqueueBackend",
                "QUEUES": ["default", "hold"]},
    "db": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "hold"]},
}
if "BENCH_CONN_MAX_AGE" in os.environ:  # bench/django_tasks.py --conn-max-age
    DATABASES["default"]["CONN_MAX_AGE"] = float(os.environ["BENCH_CONN_MAX_AGE"])  # noqa: F405
