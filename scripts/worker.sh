#!/usr/bin/env bash
# Start, stop or show a background Celery worker, Celery beat and the web service for this checkout.
#   bash scripts/worker.sh start|stop|restart|status|url
# `restart` stops all three, then starts them as `start` does (after a change of code or of .env).
# Every process reads the project's .env (ENV_FILE chooses another file; config/envfile.py), under
# what the environment sets; so does this script for WEB_BIND, LOG_FORMAT, WORKER_STATE_DIR,
# WEB_CONCURRENCY and WEB_THREADS.
# The worker executes runs; beat (django-celery-beat's database scheduler, set in
# the settings) fires the definitions' schedules and the built-in periodic tasks;
# the web service (gunicorn with config/gunicorn.py, as docker-compose.yml's `web`)
# serves the API, the alert receiver, the admin and /metrics on WEB_BIND
# (default 127.0.0.1:8000; WEB_CONCURRENCY processes x WEB_THREADS threads).
# Logs: var/worker.log, var/beat.log and var/web.log (grep a run's trace id there;
# web.log holds gunicorn's access log too); pids: var/worker.pid, var/beat.pid and
# var/web.pid. WORKER_STATE_DIR puts these files, and the schedule file beat
# insists on (`-s`; the database scheduler does not use it), somewhere else than var/.
#
# Exactly ONE beat per deployment (per database). Each beat sends every tick on
# its own clock, so two beats launch each scheduled pipeline twice as often.
# `start` does not start a second beat while the one in var/beat.pid runs, but
# it cannot see a beat started by hand or on another host that shares the
# database: with several hosts, run `celery -A workers beat -l info` on one
# host only and plain workers (`celery -A workers worker -l info`) elsewhere.
#
# Exit codes: 0 done (also "already running" for start, "not running" for stop);
# 1 the worker, beat or web service exited while starting (the web service: also
# when its address is in use or it does not answer GET /healthz); 2 usage, or a
# bad WEB_CONCURRENCY / WEB_THREADS, or an ENV_FILE that cannot be read;
# 3 status: the worker, beat or web service (or several) is not running.
# `url` prints where the web service answers (WEB_BIND as a URL; the bind itself for a
# unix socket), running or not.
set -euo pipefail
cd "$(dirname "$0")/.."
# The variables this script reads itself come from the project's .env too (ENV_FILE), when the
# environment does not set them; the processes it starts read the whole file themselves.
from_env_file=$(.venv/bin/python -m config.envfile WORKER_STATE_DIR WEB_BIND LOG_FORMAT WEB_CONCURRENCY WEB_THREADS) \
    || exit 2
eval "$from_env_file"
STATE_DIR="${WORKER_STATE_DIR:-var}"
WORKER_PID="$STATE_DIR/worker.pid"
WORKER_LOG="$STATE_DIR/worker.log"
BEAT_PID="$STATE_DIR/beat.pid"
BEAT_LOG="$STATE_DIR/beat.log"
BEAT_SCHEDULE="$STATE_DIR/celerybeat-schedule"
WEB_PID="$STATE_DIR/web.pid"
WEB_LOG="$STATE_DIR/web.log"
WEB_BIND="${WEB_BIND:-127.0.0.1:8000}"
export WEB_BIND  # config/gunicorn.py reads it
WAIT_STEPS=300  # bounded waits: 300 x 0.1 s = 30 s
# With LOG_FORMAT=json, Celery's startup banner (printed on stdout, not logged) is
# left out, so every line of the logs is one JSON object.
QUIET=()
if [ "${LOG_FORMAT:-text}" = json ]; then QUIET=(--quiet); fi
mkdir -p "$STATE_DIR"

# running PIDFILE KIND: the pid file names a live process of KIND: `celery ... worker`,
# `celery ... beat` or (web) gunicorn serving config.wsgi (not some other process
# that got the pid of one that is gone).
running() {
    local pid args
    [ -f "$1" ] || return 1
    pid=$(cat "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # -ww: the whole command line, whatever COLUMNS says (ps cuts it to that width otherwise).
    args=$(ps -ww -p "$pid" -o args= 2>/dev/null)
    case "$2:$args" in
        web:*gunicorn*config.wsgi*) return 0 ;;
        web:*) return 1 ;;
        *:*celery*" $2 "*) return 0 ;;
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
    : >> "$logfile"  # exists before the first look at it, whenever the child opens it
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

# stop_one NAME KIND PIDFILE [STEPS]: SIGTERM (a warm shutdown), SIGKILL after
# STEPS x 0.1 s (default 30 s), then whatever is left of its child processes (a
# worker's pool, gunicorn's workers).
stop_one() {
    local name=$1 kind=$2 pidfile=$3 steps=${4:-$WAIT_STEPS} pid children
    if ! running "$pidfile" "$kind"; then
        rm -f "$pidfile"
        echo "$name not running"
        return 0
    fi
    pid=$(cat "$pidfile")
    children=$(pgrep -P "$pid" || true)
    kill -TERM "$pid"
    for _ in $(seq "$steps"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    for child in $children; do kill -KILL "$child" 2>/dev/null || true; done
    rm -f "$pidfile"
    echo "$name stopped"
}

# web_url: the service's address for a browser or a probe, from WEB_BIND (HOST:PORT or
# [IPV6]:PORT; a wildcard host becomes loopback); empty for a unix socket or fd://.
web_url() {
    local host port
    case "$WEB_BIND" in
        \[*\]:*) host=${WEB_BIND%%]:*}; host="${host#[}"; port=${WEB_BIND##*]:} ;;
        unix:*|fd:*|*[!0-9A-Za-z.:_-]*) return 0 ;;
        *:*) host=${WEB_BIND%:*}; port=${WEB_BIND##*:} ;;
        *) host=$WEB_BIND; port=8000 ;;
    esac
    case "$host" in
        0.0.0.0|"") host=127.0.0.1 ;;
        ::) host=::1 ;;
    esac
    case "$host" in *:*) host="[$host]" ;; esac
    echo "http://$host:$port/"
}

# probe_web URL PID SECONDS: GET URL/healthz until it answers or SECONDS pass; prints the
# HTTP status, "gone" when PID exited first, or "timeout".
probe_web() {
    .venv/bin/python - "$1" "$2" "$3" <<'PROBE'
import os, sys, time, urllib.error, urllib.request
url, pid, deadline = sys.argv[1] + "healthz", int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        os.kill(pid, 0)
    except OSError:
        print("gone"); break
    try:
        with urllib.request.urlopen(url, timeout=max(1.0, min(10.0, deadline - time.monotonic()))) as answer:
            print(answer.status); break
    except urllib.error.HTTPError as exc:
        print(exc.code); break
    except OSError:
        pass  # not accepting yet: a worker process is still loading Django
    if time.monotonic() >= deadline:
        print("timeout"); break
    time.sleep(0.1)
PROBE
}

# start_web: start gunicorn (config/gunicorn.py) in the background unless it runs already;
# ready once it logs "Listening at" and GET /healthz answers 200. Fails (1), with the
# process stopped, when the address is in use or the service does not answer as it should.
start_web() {
    local url start_line=1 listening="" answer
    url=$(web_url)
    if running "$WEB_PID" web; then
        echo "web already running (pid $(cat "$WEB_PID")), ${url:+$url, }log: $WEB_LOG"
        return 0
    fi
    if [ -f "$WEB_LOG" ]; then start_line=$(($(wc -l < "$WEB_LOG") + 1)); fi
    : >> "$WEB_LOG"
    nohup .venv/bin/gunicorn -c config/gunicorn.py config.wsgi:application >> "$WEB_LOG" 2>&1 < /dev/null &
    echo $! > "$WEB_PID"
    disown  # out of the job table: killing it below makes no "Killed" notice on stderr
    for _ in $(seq "$WAIT_STEPS"); do
        # Gunicorn retries a taken address for 5 s, deaf to SIGTERM, before giving up: at the
        # first refusal it holds no socket and no worker yet, so SIGKILL loses nothing.
        if grep -q -- "Connection in use" < <(tail -n +"$start_line" "$WEB_LOG"); then
            kill -KILL "$(cat "$WEB_PID")" 2>/dev/null || true
            rm -f "$WEB_PID"
            echo "web cannot listen on $WEB_BIND: the address is in use (set WEB_BIND to another); see $WEB_LOG" >&2
            return 1
        fi
        if grep -q -- "Listening at" < <(tail -n +"$start_line" "$WEB_LOG"); then listening=1; break; fi
        if ! running "$WEB_PID" web; then
            rm -f "$WEB_PID"
            echo "web exited while starting; see $WEB_LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    if [ -z "$listening" ]; then
        echo "web started (pid $(cat "$WEB_PID")) but not listening after $((WAIT_STEPS / 10))s; see $WEB_LOG"
        return 0
    fi
    if [ -n "$url" ]; then
        answer=$(probe_web "$url" "$(cat "$WEB_PID")" "$((WAIT_STEPS / 10))")
        case "$answer" in
            200) ;;
            timeout)
                echo "web started (pid $(cat "$WEB_PID")) but ${url}healthz did not answer within $((WAIT_STEPS / 10))s; see $WEB_LOG"
                return 0 ;;
            gone)
                rm -f "$WEB_PID"
                echo "web exited while starting; see $WEB_LOG" >&2
                return 1 ;;
            *)
                stop_one web web "$WEB_PID" > /dev/null
                echo "web answered GET ${url}healthz with HTTP $answer, so it was stopped (400: is the host in DJANGO_ALLOWED_HOSTS?); see $WEB_LOG" >&2
                return 1 ;;
        esac
    fi
    echo "web started (pid $(cat "$WEB_PID")), ${url:+$url, }log: $WEB_LOG"
}

# status_one NAME KIND PIDFILE LOGFILE: one line; fails when it is not running.
# The web service's line also gives its URL.
status_one() {
    local url=""
    if [ "$2" = web ]; then url=$(web_url); fi
    if running "$3" "$2"; then
        echo "$1 running (pid $(cat "$3")), ${url:+$url, }log: $4"
    else
        echo "$1 not running"
        return 1
    fi
}

# check_count NAME: the variable NAME is unset, empty (then unset: gunicorn dies with a
# traceback on an empty WEB_CONCURRENCY, or WEB_CONCURRENCY=two) or a whole number of at
# least 1; exits 2 with one line otherwise.
check_count() {
    local value=${!1:-1}
    if [ -z "${!1:-}" ]; then unset "$1"; fi
    if ! [[ $value =~ ^[1-9][0-9]*$ ]]; then
        echo "$1 must be a whole number of at least 1, not '$value'" >&2
        exit 2
    fi
}

start_all() {
    # The worker first: the ticks beat sends then find a worker to run them.
    start_one worker worker "$WORKER_PID" "$WORKER_LOG" " ready\." \
        .venv/bin/celery ${QUIET[@]+"${QUIET[@]}"} -A workers worker -l info || exit 1
    # "Scheduler: " is logged once the scheduler has read the schedules from the database.
    start_one beat beat "$BEAT_PID" "$BEAT_LOG" "Scheduler: " \
        .venv/bin/celery ${QUIET[@]+"${QUIET[@]}"} -A workers beat -l info -s "$BEAT_SCHEDULE" || exit 1
    # The web service last: the runs it launches find a worker, the ticks beat.
    start_web || exit 1
}

stop_all() {
    # The web service first, so no run is launched while the worker goes away; it gets
    # 70 s, past config/gunicorn.py's graceful_timeout, to finish a request that waits
    # for a run. Then beat, so no tick is sent to a worker that is going away.
    stop_one web web "$WEB_PID" 700
    stop_one beat beat "$BEAT_PID"
    stop_one worker worker "$WORKER_PID"
}

case "${1:-status}" in
start)
    check_count WEB_CONCURRENCY
    check_count WEB_THREADS
    start_all
    ;;
stop)
    stop_all
    ;;
restart)
    # Checked before anything stops: a bad value must not leave everything stopped.
    check_count WEB_CONCURRENCY
    check_count WEB_THREADS
    stop_all
    start_all
    ;;
status)
    rc=0
    status_one worker worker "$WORKER_PID" "$WORKER_LOG" || rc=3
    status_one beat beat "$BEAT_PID" "$BEAT_LOG" || rc=3
    status_one web web "$WEB_PID" "$WEB_LOG" || rc=3
    exit "$rc"
    ;;
url)
    url=$(web_url)
    echo "${url:-$WEB_BIND}"
    ;;
*)
    echo "usage: bash scripts/worker.sh start|stop|restart|status|url" >&2; exit 2
    ;;
esac
