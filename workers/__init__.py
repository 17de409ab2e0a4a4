"""The Celery side of the launcher: the Celery app, its tasks and worker logging.

Start a worker with ``celery -A workers worker -l info``.
"""
from workers.celery import app

__all__ = ["app"]
