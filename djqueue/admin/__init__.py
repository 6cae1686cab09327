"""The Django admin as djqueue's monitor: messages, results, workers and an overview page.

Everything is read-only (rows are written by djqueue); actions need the model permission they
name. Lists never count a whole table (see :mod:`djqueue.admin.base`).
"""

from .base import ReadOnlyAdmin  # noqa: F401 - beat_admin builds on it
from . import messages, results, workers  # noqa: F401,E402 - registers the model admins
from .. import beat_admin  # noqa: F401,E402 - periodic tasks (issue 7)
