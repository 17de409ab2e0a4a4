"""The Celery side of the launcher: the Celery app, its tasks and worker logging."""
