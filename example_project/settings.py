"""Settings of the example project; everything that varies comes from the environment.

DATABASE_URL   database used for data and as the broker (default: SQLite file db.sqlite3)
SECRET_KEY     default: an insecure development key
DEBUG          default: on
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env(DEBUG=(bool, True))

SECRET_KEY = env("SECRET_KEY", default="django-insecure-djqueue-example-not-for-production")
DEBUG = env("DEBUG")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "djqueue",
    "example_project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "example_project.wsgi.application"

DATABASE_URL = env.str("DATABASE_URL", default="") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several worker processes share the file: WAL lets readers and the writer work side by side,
    # IMMEDIATE takes the write lock when a transaction starts (so it waits for it, up to the
    # timeout, instead of failing half-way through).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests run workers in other processes: the test database must be a file they can open.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

# djqueue (Celery's setting names).
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default="database") or None
# Extra task modules from the environment: the test suite adds its fault-injection tasks.
CELERY_IMPORTS = ("tasks", *env.list("DJQUEUE_EXTRA_IMPORTS", default=[]))
if env.str("DJQUEUE_POLLING_INTERVAL", default=""):  # else the broker database's default
    BROKER_TRANSPORT_OPTIONS = {"polling_interval": env.float("DJQUEUE_POLLING_INTERVAL")}
DJQUEUE_WORKER_LOST_TIMEOUT = env.float("DJQUEUE_WORKER_LOST_TIMEOUT", default=30.0)
# Beat: how fast a standby takes over from a dead active scheduler, and how often beat looks at the
# schedule (0: every second). The tests shorten both.
DJQUEUE_BEAT_LEASE_SECONDS = env.float("DJQUEUE_BEAT_LEASE_SECONDS", default=20.0)
CELERYBEAT_MAX_LOOP_INTERVAL = env.float("CELERYBEAT_MAX_LOOP_INTERVAL", default=0)
