"""The Celery app. Every CELERY_* setting in systimz.settings configures it."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "systimz.settings")

app = Celery("systimz")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
