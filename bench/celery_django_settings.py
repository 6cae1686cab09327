"""The example project's settings as those of a Django project that runs Celery: the same apps,
middleware and database, without djqueue (see bench/celery_django_side.py)."""

from example_project.settings import *  # noqa: F403

DEBUG = False
INSTALLED_APPS = [app for app in INSTALLED_APPS  # noqa: F405
                  if app not in ("djqueue", "example_project.demo")]
