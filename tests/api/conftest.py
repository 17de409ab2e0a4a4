"""Fixtures of the API's tests: keys with scopes, and clients that check answers against the
OpenAPI document (tests/api/openapi.py)."""
from __future__ import annotations

import itertools

import pytest

from tests.api.openapi import ApiClient

_names = itertools.count(1)


@pytest.fixture
def make_key(db):
    """Create an API key with the given scopes (through the service create_api_key uses) and
    return the key itself."""
    from apps.api.keys import api_key_create

    def _make(*scopes: str, name: str | None = None) -> str:
        _row, key = api_key_create(name=name or f"test-key-{next(_names)}", scopes=list(scopes))
        return key

    return _make


@pytest.fixture
def api_client(client, make_key):
    """An ApiClient for a key of the given scopes (none: no Authorization header)."""

    def _client(*scopes: str) -> ApiClient:
        return ApiClient(client, make_key(*scopes) if scopes else None)

    return _client


@pytest.fixture(autouse=True)
def _no_rate_limit_unless_asked(settings, request):
    """The rate limit counts per key in each process's memory in most tests (the embedded
    broker's settings); tests of the limit set API_RATE_LIMIT themselves."""
    if "rate_limit" not in request.node.name:
        settings.API_RATE_LIMIT = "off"


@pytest.fixture
def no_broker(settings):
    """No broker is started: a run's message would be sent on commit, which never comes in the
    tests that take this (their database transaction is rolled back)."""
    settings.CELERY_BROKER_IS_EMBEDDED = False
