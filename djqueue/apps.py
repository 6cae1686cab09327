from django.apps import AppConfig


class DjqueueConfig(AppConfig):
    name = "djqueue"
    verbose_name = "Task queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The system checks register themselves on import, here rather than when this module
        # is imported: they use the app, which loads the models, so the registry must be ready.
        from . import checks  # noqa: F401
        from .beat import checks as beat_checks  # noqa: F401
        from .events import checks as events_checks  # noqa: F401
        from .stats import checks as stats_checks  # noqa: F401
