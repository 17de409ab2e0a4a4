#!/usr/bin/env bash
# Install, migrate, load the shipped pipelines, start a background worker and
# beat (for schedules) on the embedded broker, and run health-check through the
# worker, printing the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/worker.sh start
.venv/bin/python manage.py run_pipeline --definition health-check --wait
