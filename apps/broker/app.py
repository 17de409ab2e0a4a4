"""The Celery app, configured from Django settings (the CELERY_ namespace).

Every process uses this one app: a launching process to send runs and ask
workers over remote control, a worker (workers/celery.py adds its tasks,
bootsteps and signals), and beat. Redis brokers go through the project's
transport (apps/broker/redis_adapter.py).
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("workers", amqp="apps.broker.redis_adapter:AMQP")
app.config_from_object("django.conf:settings", namespace="CELERY")
