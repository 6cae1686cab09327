"""Optional integrations: each module needs something djqueue itself does not (Django 6's
``django.tasks`` for :mod:`djqueue.contrib.django_tasks`)."""
