#!/usr/bin/env bash
# Start, stop or show a background Celery worker and Celery beat for this checkout.
#   bash scripts/worker.sh start|stop|status
# The worker executes runs; beat (django-celery-beat's database scheduler, set in
# the settings) fires the definitions' schedules and the built-in periodic tasks.
# Logs: var/worker.log and var/beat.log (grep a run's trace id there); pids:
# var/worker.pid and var/beat.pid. WORKER_STATE_DIR puts these files, and the
# schedule file beat insists on (`-s`; the database scheduler does not use it),
# somewhere else than var/.
#
# Exactly ONE beat per deployment (per database). Each beat sends every tick on
# its own clock, so two beats launch each scheduled pipeline twice as often.
# `start` does not start a second beat while the one in var/beat.pid runs, but
# it cannot see a beat started by hand or on another host that shares the
# database: with several hosts, run `celery -A workers beat -l info` on one
# host only and plain workers (`celery -A workers worker -l info`) elsewhere.
#
# Exit codes: 0 done (also "already running" for start, "not running" for stop);
# 1 the worker or beat exited while starting; 2 usage; 3 status: the worker or
# beat (or both) is not running.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE_DIR="${WORKER_STATE_DIR:-var}"
WORKER_PID="$STATE_DIR/worker.pid"
WORKER_LOG="$STATE_DIR/worker.log"
BEAT_PID="$STATE_DIR/beat.pid"
BEAT_LOG="$STATE_DIR/beat.log"
BEAT_SCHEDULE="$STATE_DIR/celerybeat-schedule"
WAIT_STEPS=300  # bounded waits: 300 x 0.1 s = 30 s
# With LOG_FORMAT=json, Celery's startup banner (printed on stdout, not logged) is
# left out, so every line of the logs is one JSON object.
QUIET=()
if [ "${LOG_FORMAT:-text}" = json ]; then QUIET=(--quiet); fi
mkdir -p "$STATE_DIR"

# running PIDFILE KIND: the pid file names a live `celery ... KIND` process
# (not some other process that got the pid of one that is gone).
running() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    case "$(ps -p "$pid" -o args= 2>/dev/null)" in
        *celery*" $2 "*) return 0 ;;
        *) return 1 ;;
    esac
}

# start_one NAME KIND PIDFILE LOGFILE READY COMMAND...: start COMMAND in the
# background unless it runs already, then wait (bounded) for READY in its log.
start_one() {
    local name=$1 kind=$2 pidfile=$3 logfile=$4 ready=$5 start_line=1
    shift 5
    if running "$pidfile" "$kind"; then
        echo "$name already running (pid $(cat "$pidfile")), log: $logfile"
        return 0
    fi
    if [ -f "$logfile" ]; then start_line=$(($(wc -l < "$logfile") + 1)); fi
    nohup "$@" >> "$logfile" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    for _ in $(seq "$WAIT_STEPS"); do
        # Not `tail | grep -q`: with pipefail, tail's SIGPIPE would fail a match.
        if grep -q -- "$ready" < <(tail -n +"$start_line" "$logfile"); then
            echo "$name started (pid $(cat "$pidfile")), log: $logfile"
            return 0
        fi
        if ! running "$pidfile" "$kind"; then
            rm -f "$pidfile"
            echo "$name exited while starting; see $logfile" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$name started (pid $(cat "$pidfile")) but not ready after $((WAIT_STEPS / 10))s; see $logfile"
}

# stop_one NAME KIND PIDFILE: SIGTERM (a warm shutdown), SIGKILL after 30 s,
# then whatever is left of its child processes (a worker's pool).
stop_one() {
    local name=$1 kind=$2 pidfile=$3 pid children
    if ! running "$pidfile" "$kind"; then
        rm -f "$pidfile"
        echo "$name not running"
        return 0
    fi
    pid=$(cat "$pidfile")
    children=$(pgrep -P "$pid" || true)
    kill -TERM "$pid"
    for _ in $(seq "$WAIT_STEPS"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    for child in $children; do kill -KILL "$child" 2>/dev/null || true; done
    rm -f "$pidfile"
    echo "$name stopped"
}

# status_one NAME KIND PIDFILE LOGFILE: one line; fails when it is not running.
status_one() {
    if running "$3" "$2"; then
        echo "$1 running (pid $(cat "$3")), log: $4"
    else
        echo "$1 not running"
        return 1
    fi
}

case "${1:-status}" in
start)
    # The worker first: the ticks beat sends then find a worker to run them.
    start_one worker worker "$WORKER_PID" "$WORKER_LOG" " ready\." \
        .venv/bin/celery ${QUIET[@]+"${QUIET[@]}"} -A workers worker -l info || exit 1
    # "Scheduler: " is logged once the scheduler has read the schedules from the database.
    start_one beat beat "$BEAT_PID" "$BEAT_LOG" "Scheduler: " \
        .venv/bin/celery ${QUIET[@]+"${QUIET[@]}"} -A workers beat -l info -s "$BEAT_SCHEDULE" || exit 1
    ;;
stop)
    # Beat first, so no tick is sent to a worker that is going away.
    stop_one beat beat "$BEAT_PID"
    stop_one worker worker "$WORKER_PID"
    ;;
status)
    rc=0
    status_one worker worker "$WORKER_PID" "$WORKER_LOG" || rc=3
    status_one beat beat "$BEAT_PID" "$BEAT_LOG" || rc=3
    exit "$rc"
    ;;
*)
    echo "usage: bash scripts/worker.sh start|stop|status" >&2; exit 2
    ;;
esac
