"""Settings for the pipeline launcher.

Every value comes from the environment, read here and nowhere else, after
the project's ``.env`` file (config/envfile.py) has filled in what the
environment does not set. The defaults need no server: SQLite under ``var/`` and (from the Celery side) an
embedded broker, so a laptop with only Python can run everything.
"""
import socket
from pathlib import Path

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from environs import Env, validate
from limits import parse_many

from apps.broker.names import PRUNE_RUNS_TASK, RECOVER_RUNS_TASK
from apps.hostnames import HOST_NAME_RULE, host_name
from config.envfile import EnvFileError, env_file_load

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)

# The project's .env (ENV_FILE) into os.environ, under what the environment sets already: the
# drivers' secrets are read from os.environ when a node runs, not only the settings below.
try:
    env_file_load()
except EnvFileError as exc:
    raise ImproperlyConfigured(str(exc)) from None
env = Env()
# Checks of numeric settings: a value outside the range stops the process at start with its name.
POSITIVE = validate.Range(min=0, min_inclusive=False)
NOT_NEGATIVE = validate.Range(min=0)

# A development key is fine by default: nothing here signs user sessions that
# matter, but production deployments should set their own.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
# Behind an HTTPS proxy the admin's forms post from an origin Django must be told to trust.
CSRF_TRUSTED_ORIGINS: list[str] = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before staticfiles: runserver then serves static files through WhiteNoise too, as gunicorn does.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    # Schedules live in its tables (editable in the admin) and its scheduler runs them in beat.
    "django_celery_beat",
    # The API's docs page: its Swagger UI files are served from here (WhiteNoise), never from a CDN.
    "ninja",
    # The console's live parts: htmx's script, served from this package as a static file.
    "django_htmx",
    "apps.api",
    "apps.console",
    "apps.orchestration",
    "apps.alerts",
    "apps.checkers",
    "apps.intelligence",
    "apps.notify",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outermost after security: any error answer under /api/ (unknown path, method, Host) leaves as JSON.
    "apps.api.middleware.ApiJsonErrorsMiddleware",
    # Static files (the admin's styles) are served by the app itself in every deployment, DEBUG or not.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "config.urls"
# The operator console's sign-in (Django's auth views at /login/ and /logout/).
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:runs"
LOGOUT_REDIRECT_URL = "console:login"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.dj_db_url(
        "DATABASE_URL",
        default=f"sqlite:///{VAR_DIR / 'pipelines.sqlite3'}",
        # Workers keep their connection between runs instead of opening one per
        # run (a new PostgreSQL session costs several milliseconds).
        conn_max_age=env.int("DB_CONN_MAX_AGE", 300),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Queries bind their parameters on the server (Django's documented option) and each
    # statement's shape is prepared from its second execution on a connection: parsing and
    # planning were most of the database's time per run (the run store's statements,
    # apps/orchestration/store.py). 0 turns preparing off (for a pooler in transaction mode
    # that cannot keep prepared statements).
    _prepare_after = env.int("DB_PREPARE_THRESHOLD", 1)
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options.setdefault("server_side_binding", True)
    _options.setdefault("prepare_threshold", _prepare_after if _prepare_after > 0 else None)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers (a waiting CLI) work while a writer (a worker) commits;
    # the timeout makes concurrent writers queue instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests run the CLI in subprocesses, which need a database file they can open.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# `manage.py collectstatic` gathers the static files here; WhiteNoise serves them from here.
STATIC_ROOT = env.path("STATIC_ROOT", VAR_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed copies (gzip) but no hashed names: a page never fails for want of a manifest
    # when collectstatic has not been run yet; files then simply go unserved until it is.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Where shipped pipeline definitions live; `load_pipelines` reads this folder.
PIPELINES_DIR = env.path("PIPELINES_DIR", BASE_DIR / "pipelines")

LOG_FORMAT = env.str("LOG_FORMAT", "text", validate=validate.OneOf(["text", "json"]))
LOG_LEVEL = env.str("LOG_LEVEL", "INFO").upper()
# The workers' log file, named in the hint a fire-and-forget launch prints. Unset, the
# hint names var/worker.log when that file exists (scripts/worker.sh writes there).
WORKER_LOG_PATH = env.str("WORKER_LOG_PATH", "")

# One line per event on stderr; LOG_FORMAT=json makes each line a JSON object
# whose fields (run_id, trace_id, node, status...) tools can filter on.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # Escapes control characters from trace ids, node ids and remote text, so a line cannot drive a terminal.
        # key=value pairs (time, level, process, logger, run_id, trace_id, msg); see apps/logs.py.
        "text": {"()": "apps.logs.TextFormatter"},
        "json": {
            # python-json-logger, with ISO-8601 UTC timestamps ("2026-11-29T10:00:00.123Z").
            "()": "apps.logs.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "processName": "process", "name": "logger"},
            # ASCII-only JSON escapes every control and bidi character (the library's default; relied on).
            "json_ensure_ascii": True,
        },
    },
    "filters": {
        # Stamps run_id / trace_id on every line written while a run is executed (apps/logcontext.py).
        "run_context": {"()": "apps.logcontext.RunContextFilter"},
        "scrub_secrets": {"()": "apps.secrets.ScrubFilter"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["run_context", "scrub_secrets"],
        },
    },
    "loggers": {
        "apps": {"handlers": ["stderr"], "level": LOG_LEVEL, "propagate": False},
        "workers": {"handlers": ["stderr"], "level": LOG_LEVEL, "propagate": False},
        "celery": {"handlers": ["stderr"], "level": LOG_LEVEL, "propagate": False},
        # Celery gives these two a raw stderr handler of its own (no scrubbing) unless they already have one.
        "celery.task": {"handlers": ["stderr"], "level": LOG_LEVEL, "propagate": False},
        "multiprocessing": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        # Django's defaults write its errors (tracebacks included) unscrubbed when DEBUG is on.
        "django": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        # httpx logs every request with its full URL, and URLs carry tokens.
        "httpx": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "httpcore": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
    # Everything else goes through the same handler, so secrets are scrubbed there too.
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}

# --- Celery -----------------------------------------------------------------
# With no CELERY_BROKER_URL, the CLI and workers share the embedded broker: a
# private Redis server on a unix socket under var/broker (see workers/embedded.py).
EMBEDDED_BROKER_DIR = env.path("EMBEDDED_BROKER_DIR", VAR_DIR / "broker")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", "") or f"redis+socket://{EMBEDDED_BROKER_DIR / 'redis.sock'}"
CELERY_BROKER_IS_EMBEDDED = not env.str("CELERY_BROKER_URL", "")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# The PipelineRun row is the result; nothing reads Celery results.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# Acknowledge after the run, and requeue when the worker process dies, so a
# run is redelivered instead of lost; execution is idempotent, so that is safe.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One run at a time per process: a run waiting behind a long one on a busy
# worker should go to an idle worker instead.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A run longer than this (from its start, across takeovers) is stopped and
# recorded as failed by the engine itself; Celery's soft and hard limits are
# a backstop, and a run found past it at a takeover is ended, not executed.
RUN_TIME_LIMIT_SECONDS = env.int("RUN_TIME_LIMIT_SECONDS", 3600)
# The soft limit comes 10 s after the engine's own: at the same moment, its SIGUSR1 could
# land while the engine is recording the run's end after its own timer stopped the node.
CELERY_TASK_SOFT_TIME_LIMIT = RUN_TIME_LIMIT_SECONDS + 10
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 30
# Unacknowledged messages of a worker that vanished are redelivered after this.
# Recovery does not wait for it (the sweep below re-publishes runs whose lease
# ran out); it must exceed the longest run so running runs are not redelivered.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 60),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Our loggers have their own handlers and format (LOG_FORMAT); keep Celery off the root logger.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Task events feed Flower (`celery -A workers flower`); off by default as each task then sends
# several broker messages. CELERY_TASK_EVENTS=1 turns on the workers' events and the
# "sent" event of whoever publishes a run (CLI, beat, web), so Flower sees queued tasks too.
CELERY_TASK_EVENTS = env.bool("CELERY_TASK_EVENTS", False)
CELERY_WORKER_SEND_TASK_EVENTS = CELERY_TASK_EVENTS
CELERY_TASK_SEND_SENT_EVENT = CELERY_TASK_EVENTS

# A worker holding a run renews its lease every third of this (database time);
# a run whose lease ran out is taken over by another worker.
RUN_LEASE_SECONDS = env.float("RUN_LEASE_SECONDS", 30.0, validate=POSITIVE)
# How long a worker keeps retrying a database write that failed on a lost
# connection before it leaves the run to the recovery sweep.
RUN_DB_RETRY_SECONDS = env.float("RUN_DB_RETRY_SECONDS", 30.0)
# The recovery sweep (apps/orchestration/recovery.py) runs this often in every
# worker and from beat, and re-publishes a queued run with no message, or a
# running run whose lease ran out, once it has gone this long without one.
RUN_RECOVERY_INTERVAL_SECONDS = env.float("RUN_RECOVERY_INTERVAL_SECONDS", 15.0, validate=POSITIVE)
RUN_RECOVERY_GRACE_SECONDS = env.float("RUN_RECOVERY_GRACE_SECONDS", 20.0, validate=NOT_NEGATIVE)
# Every this many seconds a worker drops the cancelled entries from its timer: the prefork pool
# sets one per task for the time limits above and cancels it when the task ends, and the timer
# keeps a cancelled entry until its time (over an hour), ~0.5 KB per run (workers/celery.py).
WORKER_TIMER_COMPACT_SECONDS = env.float("WORKER_TIMER_COMPACT_SECONDS", 60.0, validate=POSITIVE)
# Each worker renews its row per consumed queue this often (apps/orchestration/presence.py): /metrics'
# pipeline_workers_live counts a worker until three renewals are missed.
WORKER_PRESENCE_SECONDS = env.float("WORKER_PRESENCE_SECONDS", 10.0, validate=POSITIVE)
# Each worker folds the metrics' rollup this often (apps/orchestration/rollup.py: the rows its writers
# spread a series over, back into one), so a /metrics scrape reads about one row per series.
METRICS_ROLLUP_FOLD_SECONDS = env.float("METRICS_ROLLUP_FOLD_SECONDS", 60.0, validate=POSITIVE)
# Runs older than this many days are deleted daily by the built-in `prune-runs`
# beat entry (`manage.py prune_runs`); 0 keeps every run. The task reads it when
# it runs, so turning it off also stops the entry an earlier beat left in its table.
RUN_RETENTION_DAYS = env.int("RUN_RETENTION_DAYS", 30, validate=NOT_NEGATIVE)
CELERY_BEAT_SCHEDULE = {
    "recover-runs": {
        "task": RECOVER_RUNS_TASK,
        "schedule": RUN_RECOVERY_INTERVAL_SECONDS,
        # A sweep that waited longer than one interval is superseded by the next one
        # (the database scheduler stores this as the task's expiry, in whole seconds).
        "options": {"expire_seconds": max(1, round(RUN_RECOVERY_INTERVAL_SECONDS))},
    },
}
if RUN_RETENTION_DAYS:
    CELERY_BEAT_SCHEDULE["prune-runs"] = {
        "task": PRUNE_RUNS_TASK,
        # Daily at 04:30 UTC: the database scheduler loads crontabs near their hour, and always hour 4
        # (Celery's own cleanup hour); a fixed time, unlike an interval, is not pushed back by restarts.
        "schedule": crontab(minute="30", hour="4"),
    }
# Beat keeps schedules in the database (django-celery-beat): definitions'
# schedules are synced there by load_pipelines, and operators can see and
# edit them in the admin. The subclass stamps each tick with its due time.
CELERY_BEAT_SCHEDULER = "workers.beat:PipelineScheduler"
# Beat writes a schedule's last tick to its row after every tick (not every few
# minutes), so the admin and `list_schedules` show it, and its next due time, as they are.
CELERY_BEAT_SYNC_EVERY = 1
# One beat per database fires schedules: it holds a lease renewed on the database's
# clock at every pass (at least every few seconds); another beat waits, firing nothing,
# and takes over once the lease has gone this long without a renewal.
BEAT_LEASE_SECONDS = env.float("BEAT_LEASE_SECONDS", 30.0, validate=POSITIVE)
# The host a worker measures and serves: besides the shared queue it consumes
# the queue "host.<MONITOR_HOST>", and its `context` nodes report this name.
# Host names are compared in lower case (as DNS does).
_monitor_host = host_name(env.str("MONITOR_HOST", "") or socket.gethostname())
if _monitor_host is None:
    raise ImproperlyConfigured(f"MONITOR_HOST must be a host name ({HOST_NAME_RULE}; not 'auto' or 'all')")
MONITOR_HOST: str = _monitor_host
# `run_pipeline --wait` asks the workers whether any consumes the run's queue
# when the run is still queued after this many seconds.
RUN_PICKUP_TIMEOUT_SECONDS = env.float("RUN_PICKUP_TIMEOUT_SECONDS", 5.0)

# A definition file (load_pipelines, run_pipeline --config) larger than this
# is refused before it is read: parsing costs several times its size in memory.
DEFINITION_MAX_BYTES = env.int("DEFINITION_MAX_BYTES", 1024 * 1024, validate=POSITIVE)
# The same for a payload read by `run_pipeline --file` (a file, or standard input with `-`).
PAYLOAD_MAX_BYTES = env.int("PAYLOAD_MAX_BYTES", 1024 * 1024, validate=POSITIVE)
# A run's payload (its compact JSON, in UTF-8 bytes) larger than this is refused at launch,
# whatever the entry point: it is stored with the run, sent to every node and shown by every display.
RUN_MAX_PAYLOAD_BYTES = env.int("RUN_MAX_PAYLOAD_BYTES", 1024 * 1024, validate=POSITIVE)
# A node's output (its compact JSON) larger than this is stored cut, as a marker with a preview
# (docs/definitions.md): a run's row and its stage hold it, and every write of the run copies it.
NODE_MAX_OUTPUT_BYTES = env.int("NODE_MAX_OUTPUT_BYTES", 256 * 1024, validate=POSITIVE)
# Log lines kept with each run (show_run --logs, the console); the lines past it are counted in one
# marker line instead: a run that logs without end must not fill the database. 0 keeps only the marker.
RUN_LOG_MAX_LINES = env.int("RUN_LOG_MAX_LINES", 1000, validate=validate.Range(min=0))

# Hosts or networks outbound calls (webhooks, LLM APIs, a node's own SMTP host)
# may reach even though they are not public addresses, e.g.
# "127.0.0.1,10.0.0.0/8,ollama.internal".
OUTBOUND_ALLOW_HOSTS: list[str] = env.list("OUTBOUND_ALLOW_HOSTS", [])
# A service answering without end must not exhaust a worker's memory: larger bodies are refused.
OUTBOUND_MAX_RESPONSE_BYTES = env.int("OUTBOUND_MAX_RESPONSE_BYTES", 1024 * 1024)

# Conventional variables holding secrets: their values are scrubbed from node
# outputs, errors and logs wherever they appear.
SECRET_ENV_VARS = [
    "SLACK_WEBHOOK_URL",
    "PAGERDUTY_ROUTING_KEY",
    "NOTIFY_WEBHOOK_URL",
    "EMAIL_HOST_PASSWORD",
    "OPENAI_API_KEY",
]

# Celery's Django fixup closes database connections around every task unless
# this is set; reusing them for up to this many tasks saves a new database
# session per run (Django still drops broken or CONN_MAX_AGE-old connections).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", 200)

# Email (the `email` notify driver sends through Django's SMTP backend). These
# are the operator's, trusted; a node's own `host` must pass the outbound guard.
EMAIL_HOST = env.str("EMAIL_HOST", "localhost")
EMAIL_PORT = env.int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "pipelines@localhost")

# --- API (/api/v1/, apps/api) ------------------------------------------------------------

# Request bodies above this many bytes are refused with 413 before they are read or parsed.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", 1024 * 1024)
if API_MAX_BODY_BYTES < 1:
    raise ImproperlyConfigured("API_MAX_BODY_BYTES must be a number of bytes above 0")
# Requests per API key: one or more rates of the `limits` package ("N/period", ";"-separated,
# each must hold), counted in a moving window. A window longer than a second is the burst:
# "100/2 seconds" is 50 a second on average with up to 100 at once. "0" or "off" turns it off.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", "100/2 seconds")
if API_RATE_LIMIT.strip().lower() not in ("", "0", "off"):
    try:
        _rates = parse_many(API_RATE_LIMIT)
    except ValueError as exc:
        raise ImproperlyConfigured(f"API_RATE_LIMIT is not a rate such as '100/2 seconds': {exc}") from None
    if any(rate.amount < 1 for rate in _rates):
        raise ImproperlyConfigured("API_RATE_LIMIT must allow at least 1 request per period (or be off)")
# /metrics answers without an API key (scope metrics) only when this is set.
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", False)
# 0: /metrics leaves out the definition label (series summed over definitions), so the number of
# series stays the same however many definitions (and config file names) have run.
METRICS_DEFINITION_LABEL = env.bool("METRICS_DEFINITION_LABEL", True)
