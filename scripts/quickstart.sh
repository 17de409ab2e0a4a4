#!/usr/bin/env bash
# Install, migrate, load the shipped pipelines, start a background worker,
# beat (for schedules) and the web service on the embedded broker, run
# health-check through the worker, printing the result, and say where the web
# service answers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/worker.sh start
.venv/bin/python manage.py run_pipeline --definition health-check --wait
echo "Web service: $(bash scripts/worker.sh url) (the console at /, API under /api/v1/, admin under /admin/, log ${WORKER_STATE_DIR:-var}/web.log)."
echo "Create a user for the console with: .venv/bin/python manage.py createsuperuser"
echo "Stop the worker, beat and web service with: bash scripts/worker.sh stop"
