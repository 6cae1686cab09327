"""Settings of the observability process test's worker: ``tests.worker_settings`` plus the
signal recorder and OpenTelemetry of :mod:`tests.signal_receivers`, connected before the worker
starts (``celeryd_init`` is sent before any task module is imported, as in Celery)."""

from tests.worker_settings import *  # noqa: F403

import tests.signal_receivers  # noqa: E402, F401
