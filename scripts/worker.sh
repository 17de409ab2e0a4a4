#!/usr/bin/env bash
# Start, stop or show a background Celery worker for this checkout.
#   bash scripts/worker.sh start|stop|status
# Its log is var/worker.log (grep a run's trace id there); its pid is in var/worker.pid.
set -euo pipefail
cd "$(dirname "$0")/.."
PIDFILE=var/worker.pid
LOGFILE=var/worker.log
mkdir -p var

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-status}" in
start)
    if running; then
        echo "worker already running (pid $(cat "$PIDFILE")), log: $LOGFILE"
        exit 0
    fi
    start_line=$(($(wc -l < "$LOGFILE" 2>/dev/null || echo 0) + 1))
    nohup .venv/bin/celery -A workers worker -l info >> "$LOGFILE" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    # Bounded wait until the worker says it is ready to take runs.
    for _ in $(seq 300); do
        tail -n +"$start_line" "$LOGFILE" | grep -q " ready\." && break
        running || { echo "worker exited; see $LOGFILE" >&2; exit 1; }
        sleep 0.1
    done
    echo "worker started (pid $(cat "$PIDFILE")), log: $LOGFILE"
    ;;
stop)
    if ! running; then echo "worker not running"; exit 0; fi
    pid=$(cat "$PIDFILE")
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    rm -f "$PIDFILE"
    echo "worker stopped"
    ;;
status)
    if running; then echo "worker running (pid $(cat "$PIDFILE")), log: $LOGFILE"; else echo "worker not running"; exit 3; fi
    ;;
*)
    echo "usage: bash scripts/worker.sh start|stop|status" >&2; exit 2
    ;;
esac
