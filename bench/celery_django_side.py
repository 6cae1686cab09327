"""Celery + Redis as a Django project runs it; prints one JSON line per run.

The app, task and worker command are those of bench/celery_side.py. The difference is
``DJANGO_SETTINGS_MODULE`` (bench/celery_django_settings.py: the example project without djqueue):
with it set, Celery's Django fixup sets Django up in the worker, and runs the project's system
checks, before the pool forks, as ``celery -A proj worker`` does in a Django project. Started by
bench/run.py with the interpreter of bench/.venv-celery-django (Celery, Django, django-environ
and psycopg).
"""

from __future__ import annotations

import os
import sys

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.celery_django_settings"

from bench.celery_side import CelerySystem  # noqa: E402
from bench.common import print_runs  # noqa: E402

if __name__ == "__main__":
    print_runs(CelerySystem(), int(sys.argv[1]))
