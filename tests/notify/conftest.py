"""Fixtures of the notify tests: a message, a clean environment, a real SMTP server."""
from __future__ import annotations

import socket

import pytest

from apps.notify.base import Message
from tests.notify.support import DEFAULT_VARIABLES, SmtpServer, free_port, make_message


@pytest.fixture
def message() -> Message:
    return make_message()


@pytest.fixture(autouse=True)
def no_default_variables(monkeypatch):
    for name in DEFAULT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server (aiosmtpd) on 127.0.0.1, used by Django's SMTP backend; stopped after the test."""
    from aiosmtpd.controller import Controller

    state = SmtpServer(port=free_port())
    controller = Controller(
        state,
        hostname="127.0.0.1",
        port=state.port,
        authenticator=state.authenticate,
        auth_require_tls=False,  # a test server without TLS may still offer AUTH
    )
    controller.start()
    # pytest-django swaps in the in-memory backend; these tests want the real thing.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", state.port
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "", ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DEFAULT_FROM_EMAIL = "pipelines@example.com"
    try:
        yield state
    finally:
        controller.stop()
