"""The first task of Celery's walk-through. The example project lists this module in
CELERY_IMPORTS, so ``python manage.py celery worker`` registers it as ``tasks.add``."""

from djqueue.decorators import task


@task
def add(x, y):
    return x + y
