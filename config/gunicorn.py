"""Gunicorn's settings for the web service, the one place both deployments read them.

`scripts/worker.sh start` (the laptop set-up) and docker-compose.yml's `web`
service both run `gunicorn -c config/gunicorn.py config.wsgi:application`.
Gunicorn executes this file and reads its module-level names; everything comes
from the environment (and the project's .env, config/envfile.py, for what it does not set):

    WEB_BIND         address to listen on (default 127.0.0.1:8000; compose sets 0.0.0.0:8000
                     inside the container and publishes it on 127.0.0.1 only)
    WEB_CONCURRENCY  worker processes (default 2)
    WEB_THREADS      threads per worker process (default 8)

A bad WEB_THREADS, or a WEB_CONCURRENCY below 1, fails gunicorn's start with a one-line
message naming the variable. Gunicorn itself reads WEB_CONCURRENCY as a number when it is
imported, before this file: a value that is not a number fails there, with a traceback, so
scripts/worker.sh checks both variables before it starts anything.
"""
from __future__ import annotations

import os

from config.envfile import EnvFileError, env_file_load

# The project's .env, as the settings read it, before the WEB_* variables below are read.
try:
    env_file_load()
except EnvFileError as exc:
    raise SystemExit(str(exc)) from None


def _positive_int(name: str, default: int) -> int:
    """The positive integer in environment variable ``name`` (``default`` when unset or empty).

    Raises SystemExit with a one-line message for anything else: gunicorn stops before binding."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SystemExit(f"{name} must be a whole number of at least 1, not {raw!r}")
    return value


bind = [os.environ.get("WEB_BIND", "").strip() or "127.0.0.1:8000"]
# Threaded workers: `GET /api/v1/runs/<id>?wait=60` holds its thread up to 60 s, which would
# take a whole process with the default sync worker.
worker_class = "gthread"
workers = _positive_int("WEB_CONCURRENCY", 2)
threads = _positive_int("WEB_THREADS", 8)
# Above the longest request the API holds (60 s), so a waiting request is never killed as hung.
timeout = 90
# On stop, requests in progress (a wait included) get this long to finish.
graceful_timeout = 65
# Access and error logs both on the process's own output: worker.sh appends it to var/web.log,
# compose hands it to Docker's log driver.
accesslog = "-"
errorlog = "-"
loglevel = "info"
# Gunicorn 27 opens a control socket in ~/.gunicorn by default: one path for every gunicorn of
# the user, so a second checkout (or a test) would take it over. Nothing here uses it.
control_socket_disable = True
