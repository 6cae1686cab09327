from django.apps import AppConfig


class DjqueueConfig(AppConfig):
    name = "djqueue"
    verbose_name = "Task queue"
    default_auto_field = "django.db.models.BigAutoField"
