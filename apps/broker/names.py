"""The names of the project's Celery tasks, defined once.

Plain constants (no Django, no Celery), so settings, the sender, the log
context and the worker's task definitions all read the same names.
"""

EXECUTE_RUN_TASK = "orchestration.execute_run"
RECOVER_RUNS_TASK = "orchestration.recover_runs"
RUN_SCHEDULED_TASK = "orchestration.run_scheduled"
PRUNE_RUNS_TASK = "orchestration.prune_runs"

# The remote-control command (an inspect command: it reads only) a worker answers with
# the environment variables it lacks among those asked about (names, never values).
ENV_MISSING_COMMAND = "env_missing"
