"""Optional integrations, each enabled by the project and needing something djqueue itself does
not: an extra (``djqueue[prometheus]``, ``djqueue[opentelemetry]``) or Django 6's ``django.tasks``
(:mod:`djqueue.contrib.django_tasks`)."""
