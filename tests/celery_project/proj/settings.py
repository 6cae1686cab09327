"""Settings of the Celery-style test project: Celery ≥ 4 setting names in the CELERY_ namespace,
as Celery's Django guide writes them.

The environment gives the database (DATABASE_URL, the test database the test run created) and,
for a test that needs them, extra settings as a JSON object (DJQUEUE_EXTRA_SETTINGS; see
tests/celery_project_support.py).
"""

import json
import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

SECRET_KEY = "django-insecure-celery-style-test-project"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "djqueue",
    "demoapp",
]
DATABASES = {"default": env.db_url_config(env.str("DATABASE_URL"))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers and the test share the file (see example_project/settings.py).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Celery settings: the new names, in the CELERY_ namespace.
CELERY_BROKER_URL = "django://"
CELERY_RESULT_BACKEND = "django-db"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "polling_interval": float(os.environ.get("DJQUEUE_POLLING_INTERVAL", "1.0")),
}

globals().update(json.loads(os.environ.get("DJQUEUE_EXTRA_SETTINGS", "{}")))
