"""Celery's event stream, kept in the database: workers started with ``-E``
(``CELERY_SEND_EVENTS``) write task and worker events to ``djqueue_event``
(:mod:`djqueue.worker.events`), and ``celery events`` reads them (:mod:`djqueue.cli.events`).
"""
