"""Periodic tasks: the scheduler, its models, the sync of CELERYBEAT_SCHEDULE, checks and admin."""
