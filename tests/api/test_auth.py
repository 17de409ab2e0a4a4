"""API keys on requests: 401 without a current key, 403 without the route's scope, the key's
use recorded at most once a minute, and nothing written for a refused request."""
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.api.models import ApiKey
from tests.api.openapi import assert_matches_openapi

pytestmark = pytest.mark.django_db


def get(client, path="/api/v1/definitions", **headers):
    response = client.get(path, headers=headers)
    assert response["Content-Type"].startswith("application/json")
    return response


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "An API key is required: send Authorization: Bearer <key>"),
        ("", "An API key is required: send Authorization: Bearer <key>"),
        ("Bearer", "The Authorization header must be: Bearer <key>"),
        ("Bearer ", "The Authorization header must be: Bearer <key>"),
        ("Basic dXNlcjpwYXNz", "The Authorization header must be: Bearer <key>"),
        ("Bearer not-a-key", "The API key is not valid (unknown or revoked)"),
        ("Bearer pl_0123abcd_" + "A" * 43, "The API key is not valid (unknown or revoked)"),
    ],
)
def test_missing_or_wrong_key_is_401_json(client, authorization, message):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = assert_matches_openapi(get(client, **headers))
    assert response.status_code == 401
    assert response.json() == {"error": message}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_key_with_a_changed_secret_is_refused(client, make_key):
    key = make_key("runs:read")
    prefix, secret = key[:12], key[12:]
    forged = prefix + ("B" if secret[0] != "B" else "C") + secret[1:]
    assert get(client, Authorization=f"Bearer {forged}").status_code == 401
    assert get(client, Authorization=f"Bearer {key}").status_code == 200


def test_the_scheme_is_case_insensitive(client, make_key):
    key = make_key("runs:read")
    assert get(client, Authorization=f"bearer {key}").status_code == 200


def test_a_key_without_the_routes_scope_is_403(client, make_key):
    key = make_key("alerts", "metrics", "runs:write")
    response = assert_matches_openapi(get(client, Authorization=f"Bearer {key}"))
    assert response.status_code == 403
    assert response.json() == {"error": "This API key does not have the scope 'runs:read'"}


def test_a_revoked_key_is_401(client, make_key):
    from apps.api.keys import api_key_revoke

    key = make_key("runs:read", name="gone")
    api_key_revoke(name="gone")
    assert get(client, Authorization=f"Bearer {key}").status_code == 401


def test_last_used_is_written_on_first_use_then_at_most_once_a_minute(client, make_key, django_assert_num_queries):
    key = make_key("runs:read", name="busy")
    assert ApiKey.objects.get(name="busy").last_used_at is None
    assert get(client, Authorization=f"Bearer {key}").status_code == 200
    first = ApiKey.objects.get(name="busy").last_used_at
    assert first is not None
    # Within the minute: the key's row is read, nothing written (one query: the lookup; one: the listing).
    with django_assert_num_queries(2):
        assert get(client, Authorization=f"Bearer {key}").status_code == 200
    assert ApiKey.objects.get(name="busy").last_used_at == first
    ApiKey.objects.filter(name="busy").update(last_used_at=timezone.now() - timedelta(minutes=2))
    assert get(client, Authorization=f"Bearer {key}").status_code == 200
    assert ApiKey.objects.get(name="busy").last_used_at > first


def test_refused_requests_write_nothing(client, make_key):
    key = make_key("alerts", name="wrong-scope")
    assert get(client, Authorization=f"Bearer {key}").status_code == 403
    assert get(client, Authorization="Bearer pl_0123abcd_" + "A" * 43).status_code == 401
    assert ApiKey.objects.get(name="wrong-scope").last_used_at is None
