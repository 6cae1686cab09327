"""The app that objects made without one belong to (signatures, groups, results)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import App


def current_app() -> App:
    """``djqueue.app``, the process's one app."""
    # On first use, not on import: the app loads the models, and djqueue.result and
    # djqueue.canvas must stay importable while Django is still loading apps.
    from .base import app

    return app
