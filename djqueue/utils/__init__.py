"""Celery's ``celery.utils`` names that projects import (``djqueue.utils.log.get_task_logger``)."""
