"""The Django admin as djqueue's monitor: messages, results, workers and an overview page.

Everything is read-only (rows are written by djqueue); actions need the model permission they
name. Lists never count a whole table (see :mod:`djqueue.admin.base`).
"""

from . import messages, results, workers  # noqa: F401 - registers the model admins
from ..beat import admin as beat_admin  # noqa: F401 - registers the periodic-task admin
from ..flow import admin as flow_admin  # noqa: F401 - overrides and paused queues
