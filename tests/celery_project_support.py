"""The Celery-style test project (tests/celery_project/) as tests use it.

``project_worker``: start ``python manage.py celery worker`` of that project (its own settings,
``proj.settings``: Celery ≥ 4 names in the ``CELERY_`` namespace, the app in ``proj/celery.py``
imported from ``proj/__init__.py``), on the test database. Same calling convention as
``start_worker`` (tests/conftest.py): ``project_worker("-c", "2", settings={...})``; every worker
is killed at the end of the test. Importing this module puts the project on ``sys.path``, so a
test calls the project's tasks as its code would: ``from demoapp.tasks import add``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import WorkerProcess, _process_starter

PROJECT = Path(__file__).resolve().parent / "celery_project"
if str(PROJECT) not in sys.path:
    sys.path.append(str(PROJECT))


@pytest.fixture
def project_worker(
    transactional_db: None, tmp_path: Path, worker_env: dict[str, str]
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers of the Celery-style project; all are killed when the test ends."""
    env = {key: value for key, value in worker_env.items()
           if key not in ("DJANGO_SETTINGS_MODULE", "DJQUEUE_EXTRA_IMPORTS")}
    yield from _process_starter("worker", " ready.", tmp_path, env, cwd=PROJECT,
                                settings_module="proj.settings")
