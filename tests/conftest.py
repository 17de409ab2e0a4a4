"""Shared fixtures: running the CLI in-process and as a real subprocess, the health-check
definition, local servers. The helpers behind them are in tests/support.py."""
from __future__ import annotations

import copy
import io
import logging
import logging.config
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.support import (  # noqa: F401  (ROOT and CommandResult: still importable from here)
    HEALTH_CHECK_NODES,
    ROOT,
    CommandResult,
    database_url,
    manage_py,
)


@pytest.fixture
def run_command():
    """Run a management command in-process; returns its exit code and output."""

    def _run(*args: str) -> CommandResult:
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command(*args, stdout=out, stderr=err)
            code = 0
        except CommandError as exc:
            err.write(f"CommandError: {exc}\n")
            code = exc.returncode
        except SystemExit as exc:  # a command leaving with its exit code and no error line (show_run of a live run)
            code = exc.code if isinstance(exc.code, int) else 1
        return CommandResult(code, out.getvalue(), err.getvalue())

    return _run


@pytest.fixture
def subprocess_env(transactional_db) -> dict:
    """Environment for a child process that shares this test's (committed) database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url()
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture
def manage(subprocess_env):
    """Run ``manage.py`` as a real child process (bounded by a timeout)."""

    def _run(*args: str, timeout: float = 120, env: dict | None = None) -> CommandResult:
        return manage_py(*args, env={**subprocess_env, **(env or {})}, timeout=timeout)

    return _run


@pytest.fixture
def health_check(db):
    """The spec's health-check definition, stored (in a transactional test too, when it asks for one)."""
    from apps.orchestration.models import PipelineDefinition

    return PipelineDefinition.objects.create(name="health-check", config={"version": "1.0", "nodes": HEALTH_CHECK_NODES})


@pytest.fixture
def http_server(settings):
    """A recording HTTP server on 127.0.0.1, allowed as an outbound target; stopped after the test."""
    from tests.httpserver import start_server

    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    state, stop = start_server()
    try:
        yield state
    finally:
        stop()


@pytest.fixture
def alertmanager():
    """Start real Alertmanagers (tests.alertmanager): call it with ``receiver_url=`` and ``key=``
    (and ``group_by=``); each one started is stopped by its pid after the test, failed or not.
    Skips where the binary is missing, fails instead when REQUIRE_SERVICES=1."""
    from tests.alertmanager import start_alertmanager

    started = []

    def _start(**options):
        manager = start_alertmanager(**options)
        started.append(manager)
        return manager

    try:
        yield _start
    finally:
        for manager in started:
            manager.stop()


@pytest.fixture
def fixed_dns(monkeypatch):
    """apps.outbound's resolver answering from a table (tests.dns.FixedResolver) instead of DNS."""
    from apps import outbound
    from tests.dns import FixedResolver

    resolver = FixedResolver()
    monkeypatch.setattr(outbound, "resolver", resolver)
    return resolver


@pytest.fixture(scope="session", autouse=True)
def checkout_broker_stopped_at_the_end():
    """The checkout's own embedded broker (EMBEDDED_BROKER_DIR, var/broker), which
    in-process commands start as they would on a laptop, is stopped when the tests
    end, unless it was running before they began."""
    from apps.broker.embedded import EmbeddedBroker, EmbeddedBrokerError

    broker = EmbeddedBroker(Path(settings.EMBEDDED_BROKER_DIR))
    running_before = broker.is_running()
    yield
    if not running_before:
        try:
            broker.stop()
        except EmbeddedBrokerError as exc:
            print(f"the checkout's embedded broker did not stop: {exc}")


# Rows migrate writes (post_migrate) and no test changes: the flush after a transactional test keeps
# them, and post_migrate then finds nothing to add instead of writing about 150 rows again.
FLUSH_KEEPS = frozenset({"django_content_type", "auth_permission"})
# A flush a late writer made fail (see flush_deletes_rows) is tried this many times in all.
FLUSH_TRIES = 5
FLUSH_RETRY_WAIT = 0.5


@pytest.fixture(scope="session", autouse=True)
def flush_deletes_rows():
    """The flush that empties the database after each transactional test deletes the rows of every
    table but FLUSH_KEEPS, as Django's flush does on SQLite, instead of PostgreSQL's TRUNCATE.

    Why: TRUNCATE gives each of the ~30 tables new files, about 1.3 s a flush on a loaded 2-core
    machine, against 0.02-0.2 s for deleting the few rows a test leaves; the end state is the same
    (every table empty, sequences not reset, as Django's own flush leaves them), and the foreign
    keys, all deferred, are checked when the flush commits. A flush that resets sequences or
    cascades (available_apps, unused here) is left to Django.

    A worker may still be finishing a run the test left going (a module's shared worker). A row
    it adds pointing at one the flush deleted fails the flush at commit, and the rows would be
    left for the next test: a flush that fails on a database error is tried again, up to
    FLUSH_TRIES times, after a short wait for the writer to be done. (Locking the tables first,
    as TRUNCATE does, deadlocked with such a writer instead.)"""
    from django.db import DatabaseError, connection

    ops_class = type(connection.ops)
    django_sql_flush = ops_class.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        tables = [table for table in tables if table not in FLUSH_KEEPS]
        if reset_sequences or allow_cascade:
            return django_sql_flush(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        delete_from = f"{style.SQL_KEYWORD('DELETE')} {style.SQL_KEYWORD('FROM')}"
        return [f"{delete_from} {style.SQL_FIELD(self.quote_name(table))};" for table in tables]

    django_execute_sql_flush = ops_class.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        for tries_left in range(FLUSH_TRIES - 1, -1, -1):
            try:
                return django_execute_sql_flush(self, sql_list)
            except DatabaseError:
                if not tries_left:
                    raise
                time.sleep(FLUSH_RETRY_WAIT)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops_class, "sql_flush", sql_flush)
        patch.setattr(ops_class, "execute_sql_flush", execute_sql_flush)
        yield


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for the name tls.example and its key (files); skips without openssl."""
    import shutil

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=tls.example",
         "-addext", "subjectAltName=DNS:tls.example", "-days", "2"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.fixture
def apps_log(caplog):
    """caplog, attached to the "apps" logger: the settings stop it from propagating to the root."""
    logger = logging.getLogger("apps")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="apps"):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def log_to():
    """A logger writing through the formatter and filter settings.LOGGING names; returns it and its output."""
    made = []

    def _make(fmt: str, name: str | None = None):
        configurator = logging.config.DictConfigurator(copy.deepcopy(settings.LOGGING))
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(configurator.configure_formatter(configurator.config["formatters"][fmt]))
        for filter_name in settings.LOGGING["handlers"]["stderr"]["filters"]:
            handler.addFilter(configurator.configure_filter(configurator.config["filters"][filter_name]))
        logger = logging.getLogger(name or f"tests.logs.{uuid.uuid4().hex}")
        logger.addHandler(handler)
        if name is None:
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
        made.append((logger, handler))
        return logger, handler.stream

    yield _make
    for logger, handler in made:
        logger.removeHandler(handler)
