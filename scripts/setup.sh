#!/usr/bin/env bash
# Create .venv, install the locked requirements (requirements.lock: every package pinned, with
# hashes), migrate, load the shipped pipelines,
# and collect the static files the admin needs (served by WhiteNoise from var/static).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
.venv/bin/python manage.py migrate --verbosity 0
.venv/bin/python manage.py load_pipelines
.venv/bin/python manage.py collectstatic --noinput --verbosity 0
