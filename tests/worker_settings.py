"""Settings for worker subprocesses that a test configures: the example project's settings plus
the JSON object in DJQUEUE_EXTRA_SETTINGS (see ``start_worker(settings=...)`` in conftest)."""

import json
import os

from example_project.settings import *  # noqa: F403

globals().update(json.loads(os.environ.get("DJQUEUE_EXTRA_SETTINGS", "{}")))
