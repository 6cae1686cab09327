"""Imported only through CELERY_IMPORTS (test_settings_effects.py checks that it is)."""

from djqueue import task


@task(name="tests.imported_tasks.double")
def double(x):
    return 2 * x
