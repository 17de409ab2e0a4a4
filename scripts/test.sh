#!/usr/bin/env bash
# Run the whole test suite: once on SQLite, once on PostgreSQL.
#
# First come ruff, mypy and the migrations check (configured in pyproject.toml):
# each prints its findings, and any failure fails the script before the tests
# run. TEST_CHECKS=0 skips them, for a quick run of a few tests.
#
# The two passes share nothing (SQLite and the embedded broker here, PostgreSQL
# and Redis there), so they run side by side: the PostgreSQL pass in the
# background, its output shown once the SQLite pass has ended. TEST_PARALLEL=0
# runs them one after the other.
#
# Each pass runs its test files in TEST_PROCESSES processes (pytest-xdist,
# default 2; 1 runs them in one). A file's tests stay in one process, so a
# module's worker and broker are started once; each process has a database of
# its own (test_NAME_gw0, test.sqlite3_gw0...) and an embedded broker directory
# of its own (var/broker-gw0..., see tests/settings.py). The suite mostly waits
# on the processes it starts, so two processes per pass fit two cores.
#
# The PostgreSQL pass uses TEST_DATABASE_URL (default: the local server's
# `test` database). When that server is not reachable the pass is skipped
# with a message, unless REQUIRE_SERVICES=1 (set by CI), which makes it fail.
#
# Worker tests on Redis use TEST_REDIS_URL: the server and the databases they may
# claim, redis://HOST:PORT/FIRST-LAST (default redis://127.0.0.1:6379/10-15; see
# tests/support.py). Give two checkouts tested at once disjoint ranges. Those on
# RabbitMQ use TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/), a
# virtual host of their own each, made with rabbitmqctl.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    bash scripts/setup.sh >/dev/null || exit 1
fi
PG_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

if [ "${TEST_CHECKS:-1}" != "0" ]; then
    if [ ! -x .venv/bin/ruff ] || [ ! -x .venv/bin/mypy ]; then
        echo "ruff or mypy is missing from .venv: run scripts/setup.sh (it installs requirements.lock)."
        exit 1
    fi
    checks_rc=0
    echo "== ruff =="
    .venv/bin/ruff check . || checks_rc=1
    echo "== mypy =="
    .venv/bin/mypy || checks_rc=1
    # On SQLite, like the first pass: the check compares models with migration files and needs no server.
    echo "== migrations =="
    env -u DATABASE_URL .venv/bin/python manage.py makemigrations --check --dry-run || checks_rc=1
    if [ "$checks_rc" -ne 0 ]; then
        echo "FAILED: ruff, mypy or the migrations check (see above); the tests did not run."
        exit 1
    fi
fi

pg_reachable() {
    .venv/bin/python - "$PG_URL" <<'PY'
import sys, psycopg, dj_database_url
cfg = dj_database_url.parse(sys.argv[1])
try:
    psycopg.connect(host=cfg["HOST"], port=cfg["PORT"] or 5432, user=cfg["USER"] or None,
                    password=cfg["PASSWORD"] or None, dbname=cfg["NAME"], connect_timeout=3).close()
except Exception as exc:
    print(f"PostgreSQL not reachable: {exc}")
    sys.exit(1)
PY
}

# The whole-worker kill test repeats 5 times per broker on PostgreSQL and twice here,
# which keeps the suite short; TEST_KILL_ROUNDS sets both (scripts/soak.py goes further).
# Worker tests run on the embedded broker here, and on Redis in the PostgreSQL pass,
# where those marked rabbitmq run on RabbitMQ as well (TEST_BROKERS sets the brokers of
# both passes: embedded, redis, rabbitmq; TEST_RABBITMQ_ALL=1 runs every worker test on it).
PROCESSES="${TEST_PROCESSES:-2}"
XDIST=()
if [ "$PROCESSES" != "1" ]; then
    XDIST=(-n "$PROCESSES" --dist loadfile)
fi
sqlite_pass() {
    env -u DATABASE_URL TEST_KILL_ROUNDS="${TEST_KILL_ROUNDS:-2}" TEST_BROKERS="${TEST_BROKERS:-embedded}" \
        .venv/bin/python -m pytest "${XDIST[@]}" "$@"
}
pg_pass() {
    DATABASE_URL="$PG_URL" TEST_BROKERS="${TEST_BROKERS:-redis,rabbitmq}" .venv/bin/python -m pytest "${XDIST[@]}" "$@"
}

pg_rc=0
pg_pid=""
pg_log=""
pg_run="no"
if pg_reachable; then
    pg_run="after"
    if [ "${TEST_PARALLEL:-1}" != "0" ]; then
        pg_run="alongside"
        pg_log="$(mktemp -t pg-pass.XXXXXX)"
        # A process group of its own (set -m), so Ctrl-C or an early exit stops all of it.
        set -m
        pg_pass "$@" >"$pg_log" 2>&1 &
        pg_pid=$!
        set +m
        trap '[ -n "$pg_pid" ] && kill -TERM -- "-$pg_pid" 2>/dev/null; rm -f "$pg_log"' EXIT
        trap 'exit 130' INT TERM
        echo "== tests on PostgreSQL ($PG_URL): running alongside, output below once SQLite is done =="
    fi
elif [ "${REQUIRE_SERVICES:-0}" = "1" ]; then
    echo "REQUIRE_SERVICES=1 and PostgreSQL is not reachable: failing."
    pg_rc=1
else
    echo "SKIPPED: the PostgreSQL pass (server not reachable; set TEST_DATABASE_URL to run it)."
fi

echo "== tests on SQLite =="
sqlite_pass "$@"
sqlite_rc=$?

if [ "$pg_run" = "alongside" ]; then
    wait "$pg_pid"
    pg_rc=$?
    pg_pid=""
    echo "== tests on PostgreSQL ($PG_URL) =="
    cat "$pg_log"
elif [ "$pg_run" = "after" ]; then
    echo "== tests on PostgreSQL ($PG_URL) =="
    pg_pass "$@"
    pg_rc=$?
fi
[ "$sqlite_rc" -eq 0 ] && [ "$pg_rc" -eq 0 ]
