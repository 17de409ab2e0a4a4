"""The Celery app, configured from Django settings (the CELERY_ namespace)."""
import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("workers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@worker_init.connect
def _start_embedded_broker(**kwargs):
    """A worker on the embedded broker starts it when nobody has yet."""
    from workers.embedded import ensure_broker

    ensure_broker()
