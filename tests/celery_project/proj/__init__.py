# As Celery's "First steps with Django" says: load the app when Django starts, so that
# @shared_task uses it. This runs while Django reads the settings, before its app registry is ready.
from .celery import app as celery_app

__all__ = ("celery_app",)
