"""``from djqueue.decorators import task``: the import path Celery's first-steps guide uses."""

from .client.base import app

task = app.task
shared_task = app.task

__all__ = ["task", "shared_task"]
