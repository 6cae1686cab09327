"""The project's app, written as Celery's Django guide writes ``proj/celery.py``; only the import
line differs (``from djqueue import Celery``)."""

import os

from djqueue import Celery

# The default settings module for the 'celery' program (here ``python manage.py celery``).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")

# Settings in the CELERY_ namespace of the Django settings (CELERY_TASK_ROUTES, ...).
app.config_from_object("django.conf:settings", namespace="CELERY")

# Load the task modules of all registered Django apps.
app.autodiscover_tasks()


@app.task(bind=True, ignore_result=True)
def debug_task(self):
    print(f"Request: {self.request!r}")
