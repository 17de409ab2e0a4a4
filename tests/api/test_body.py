"""Bounded bodies: 413 above API_MAX_BODY_BYTES (by Content-Length, or by what is read), 415
for anything but JSON, 400 for JSON that apps/jsondata.py refuses; through ninja's parser and
through json_body called by a view itself."""
import json

import pytest

from apps.api.models import ApiKey

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api.echo_urls")]

ROUTES = [("/api/echo/parsed", "runs:write"), ("/api/echo/raw", "alerts")]


@pytest.fixture(params=ROUTES, ids=["parser", "json_body"])
def route(request, make_key):
    path, scope = request.param
    return path, make_key(scope)


def post(client, route, body, content_type="application/json", **extra):
    path, key = route
    response = client.post(path, body, content_type=content_type, headers={"Authorization": f"Bearer {key}"}, **extra)
    assert response["Content-Type"].startswith("application/json")
    return response


def test_json_within_bounds_is_read(client, route):
    response = post(client, route, json.dumps({"value": {"a": [1, 2.5, "x"]}}))
    assert response.status_code == 200
    value = response.json()["value"]
    assert value in ({"a": [1, 2.5, "x"]}, {"value": {"a": [1, 2.5, "x"]}})


def test_a_body_over_the_limit_is_413(client, route, settings):
    settings.API_MAX_BODY_BYTES = 100
    body = json.dumps({"value": "x" * 200})
    response = post(client, route, body)
    assert response.status_code == 413
    assert response.json() == {"error": "The request body is larger than 100 bytes (API_MAX_BODY_BYTES)"}
    assert post(client, route, json.dumps({"value": "x" * 50})).status_code == 200


def test_a_declared_length_over_the_limit_is_413_before_reading(client, route, settings):
    settings.API_MAX_BODY_BYTES = 100
    # Content-Length says more than the limit; the body itself is short: refused on the header alone.
    response = post(client, route, json.dumps({"value": 1}), CONTENT_LENGTH="5000")
    assert response.status_code == 413


def test_a_body_longer_than_its_declared_length_is_read_only_to_the_limit(client, route, settings):
    settings.API_MAX_BODY_BYTES = 100
    body = json.dumps({"value": "x" * 500})
    # No Content-Length at all, as with a chunked body: the read stops one byte past the limit.
    response = post(client, route, body, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked",
                    **{"wsgi.input_terminated": True})
    assert response.status_code == 413


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "", "application/jsonx",
     "application/json; charset=latin-1"],
)
def test_a_body_that_is_not_json_is_415(client, route, content_type):
    response = post(client, route, '{"value": 1}', content_type=content_type)
    assert response.status_code == 415
    assert response.json()["error"] in (
        "The request body must be JSON, sent with Content-Type: application/json", "JSON must be encoded in UTF-8",
    )


def test_json_variants_are_accepted(client, route):
    assert post(client, route, '{"value": 1}', content_type="application/vnd.api+json").status_code == 200
    assert post(client, route, '{"value": 1}', content_type="application/json; charset=UTF-8").status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[" * 100 + "]" * 100, "nested deeper than 64 levels"),
        ('{"value": NaN}', "NaN is not allowed (numbers must be finite)"),
        ('{"value": 1e999}', "the number 1e999 is out of range (numbers must be finite)"),
        ('{"value": "a\\u0000b"}', "a NUL character in the text at value"),
        ('{"value": ' + "9" * 5000 + "}", "a number longer than 40 characters (999999999999…)"),
        ('{"value": ', "Expecting value: line 1 column 11 (char 10)"),
    ],
)
def test_json_that_jsondata_refuses_is_400_with_its_message(client, route, body, message):
    response = post(client, route, body)
    assert response.status_code == 400
    assert response.json() == {"error": f"The request body is not acceptable JSON: {message}"}


def test_a_body_that_is_not_utf8_is_400(client, route):
    response = post(client, route, b'{"value": "\xff"}')
    assert response.status_code == 400
    assert response.json() == {"error": "The request body is not valid UTF-8"}


def test_the_key_is_checked_before_the_body_is_read(client, route, settings):
    path, _key = route
    for body, content_type in (("x", "text/plain"), ('{"value": NaN}', "application/json")):
        response = client.post(path, body, content_type=content_type, headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
    assert ApiKey.objects.filter(last_used_at__isnull=False).count() == 0


def test_a_declared_length_over_the_limit_is_refused_even_before_the_key(client, route, settings):
    settings.API_MAX_BODY_BYTES = 100
    path, _key = route
    response = client.post(path, "{}", content_type="application/json", CONTENT_LENGTH="5000")
    assert response.status_code == 413
    assert response.json() == {"error": "The request body is larger than 100 bytes (API_MAX_BODY_BYTES)"}


def test_a_body_of_the_wrong_shape_is_400_with_each_problem(client, make_key):
    key = make_key("runs:write")
    response = client.post("/api/echo/parsed", '{"other": 1}', content_type="application/json",
                           headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "The request is not valid"
    assert body["errors"] == ["value: Field required"]


def test_a_failure_of_the_servers_own_is_500_json_without_details(client, make_key, apps_log):
    key = make_key("runs:read")
    response = client.get("/api/echo/boom", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "Internal error: the server could not answer this request (see the web service's log)"
    }
    assert "/srv/secret/path" in apps_log.text and "RuntimeError" in apps_log.text
    assert "event=api.error method=GET path=/api/echo/boom" in apps_log.text
