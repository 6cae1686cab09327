from django.apps import AppConfig


class DjqueueConfig(AppConfig):
    name = "djqueue"
    verbose_name = "Task queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from . import checks as _settings_checks  # noqa: F401 - registers the settings checks
        from .beat.checks import check_beat_settings

        checks.register(check_beat_settings, "djqueue")
