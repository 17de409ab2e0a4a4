"""The worker's own remote-control commands (Celery's Panel), registered when the
worker imports this module (workers/celery.py does).

``env_missing``: which of the environment variables a client names are unset
in this worker, so ``manage.py doctor`` and ``run_pipeline --dry-run`` learn
what the processes that run the nodes lack, not what the asking process has.
Also ``celery -A workers inspect env_missing NAME ...`` from a shell.
"""
from __future__ import annotations

from celery.worker.control import inspect_command

from apps.broker.names import ENV_MISSING_COMMAND
from apps.secrets import env_unset

# A question longer than this is cut: no definition set names that many variables.
MAX_NAMES = 1000


@inspect_command(name=ENV_MISSING_COMMAND, variadic="names", signature="NAME [NAME ...]")
def env_missing(state, names=(), **kwargs) -> dict:
    """The environment variables among NAME... this worker lacks (names, never values), and the queues it consumes."""
    asked = [name for name in list(names or ())[:MAX_NAMES] if isinstance(name, str) and name]
    task_consumer = state.consumer.task_consumer
    queues = sorted(queue.name for queue in task_consumer.queues) if task_consumer else []
    return {"missing": env_unset(asked), "queues": queues}
