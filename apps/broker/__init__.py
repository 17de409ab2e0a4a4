"""The project's one home for Celery and the broker: the task names, the
Celery app the project sends with, the Redis adapter (the only code that
knows kombu's and redis-py's internals), and the embedded broker.

``apps/`` reaches Celery only through here; ``workers/`` adds the worker's
side (tasks, bootsteps, signals, beat's scheduler) to the same app.
"""
