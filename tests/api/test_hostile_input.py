"""Hostile input to the API's routes (headers, path segments, query values, bodies): every
answer is JSON with a 4xx or 2xx status, never a 500, and nothing is written."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from apps.api.models import ApiKey
from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.api.openapi import assert_matches_openapi
from tests.hostile import HOSTILE_JSON, HOSTILE_TEXT
from tests.orchestration.test_hostile_input import TINY

pytestmark = pytest.mark.django_db

ROUTES = ["/api/v1/definitions", "/api/v1/definitions/stored", "/api/v1/schedules"]


def encoded(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def as_wsgi(text: str) -> str:
    """``text`` as a WSGI server hands a header to Django: its UTF-8 bytes, decoded as ISO-8859-1."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


@pytest.fixture
def world(make_key):
    """A stored definition and a key, and a snapshot of every row the API could write."""
    PipelineDefinition.objects.create(name="stored", config=TINY)
    key = make_key("runs:read", name="reader")
    ApiKey.objects.update(last_used_at=None)

    def rows():
        return (
            list(PipelineDefinition.objects.values_list("name", "updated_at")),
            PipelineRun.objects.count(),
            list(ApiKey.objects.values_list("name", "key_hash", "scopes", "last_used_at")),
        )

    return key, rows


def answered(response, *, statuses=(200, 400, 401, 403, 404, 405, 413, 415)):
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    body = response.json()
    if response.status_code >= 400:
        assert set(body) <= {"error", "errors"} and isinstance(body["error"], str)
        assert "Traceback" not in body["error"]
    return response


def test_hostile_authorization_headers_are_401_and_write_nothing(client, world):
    _key, rows = world
    before = rows()
    for text in HOSTILE_TEXT:
        for header in (text, f"Bearer {text}", f"bearer  {text}", f"Bearer pl_{text}", f"Basic {text}"):
            for path in ROUTES:
                # As META, as a server passes it: the test client refuses some of these as headers=.
                response = answered(client.get(path, HTTP_AUTHORIZATION=as_wsgi(header)), statuses=(401,))
                assert_matches_openapi(response)
    assert rows() == before


def test_hostile_other_headers_change_nothing(client, world):
    key, rows = world
    before = rows()
    for text in HOSTILE_TEXT:
        for name in ("CONTENT_TYPE", "HTTP_ACCEPT", "HTTP_X_FORWARDED_FOR", "HTTP_TRANSFER_ENCODING", "CONTENT_LENGTH",
                     "HTTP_COOKIE"):
            for path in ROUTES:
                meta = {"HTTP_AUTHORIZATION": f"Bearer {key}", name: as_wsgi(text)}
                answered(client.get(path, **meta), statuses=(200, 400, 413))
    # The only write: the key's last use, once.
    after = rows()
    assert after[:2] == before[:2]
    assert [row[:3] for row in after[2]] == [row[:3] for row in before[2]]


def test_hostile_path_segments_are_404(client, world):
    key, rows = world
    before = rows()
    auth = {"Authorization": f"Bearer {key}"}
    for text in [*HOSTILE_TEXT, "..", "%00", "stored\x00", "STORED", "stored ", "ßtored", "a/b", "stored/extra"]:
        for path in (f"/api/v1/definitions/{encoded(text)}", f"/api/v1/definitions/{text}"):
            try:
                response = client.get(path, headers=auth)
            except UnicodeEncodeError:
                continue  # the test client cannot even send it
            answered(response, statuses=(404, 200) if text == "stored" else (404,))
        answered(client.get(f"/api/v1/{encoded(text)}", headers=auth), statuses=(404,))
    after = rows()
    assert after[:2] == before[:2]


def test_hostile_query_values_are_ignored_or_refused(client, world):
    key, rows = world
    before = rows()
    auth = {"Authorization": f"Bearer {key}"}
    for text in HOSTILE_TEXT:
        for path in ROUTES:
            query = f"?name={encoded(text)}&{encoded(text)}=1"
            assert_matches_openapi(answered(client.get(path + query, headers=auth), statuses=(200,)))
        # The lists' own parameters: a page by name, or a 400 that says what is wrong.
        for path in ("/api/v1/definitions", "/api/v1/schedules"):
            for parameter in ("q", "cursor", "limit"):
                response = answered(client.get(f"{path}?{parameter}={encoded(text)}", headers=auth),
                                    statuses=(200, 400))
                assert_matches_openapi(response)
    assert rows()[:2] == before[:2]


def test_hostile_bodies_to_the_read_only_routes_write_nothing(client, world):
    key, rows = world
    before = rows()
    auth = {"Authorization": f"Bearer {key}"}
    for body in HOSTILE_JSON.values():
        for path in ROUTES:
            answered(client.post(path, body, content_type="application/json", headers=auth), statuses=(405,))
            answered(client.generic("GET", path, body, content_type="application/json", headers=auth), statuses=(200,))
            for method in ("PUT", "PATCH", "DELETE", "OPTIONS"):
                answered(client.generic(method, path, body, content_type="application/json", headers=auth),
                         statuses=(405,))
    assert rows()[:2] == before[:2]


def test_healthz_answers_ok_without_a_key_and_reads_nothing(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz", headers={"Authorization": "Bearer \x00junk"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405
