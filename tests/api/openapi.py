"""Checking the API's real answers against its own OpenAPI document (openapi-core).

``assert_matches_openapi(response)`` validates one Django test-client response (status,
content type, body) against the operation its request was routed to; ``ApiClient`` sends
requests with an API key and checks every answer that way. Every endpoint's tests use it,
so the document cannot drift from what the API really sends."""
from __future__ import annotations

import functools
import json

from ninja.responses import NinjaJSONEncoder
from openapi_core import OpenAPI
from openapi_core.contrib.django import DjangoOpenAPIRequest, DjangoOpenAPIResponse
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict


@functools.cache
def openapi_document() -> dict:
    """The API's OpenAPI document as the API serves it (built once per test session)."""
    import apps.api.urls  # noqa: F401  (mounts the routers on the api)
    from apps.api.site import api

    # Through JSON, as served: status codes become strings.
    return json.loads(json.dumps(api.get_openapi_schema(), cls=NinjaJSONEncoder))


@functools.cache
def _openapi() -> OpenAPI:
    return OpenAPI.from_dict(openapi_document())


class _AnsweredRequest(DjangoOpenAPIRequest):
    """openapi-core's view of a Django request, keeping only the headers it can hold: checking
    the answer to a hostile request needs the route, not the request's headers."""

    def __init__(self, request):
        self.request = request
        self.parameters = RequestParameters(
            path=request.resolver_match.kwargs if request.resolver_match else {},
            query=ImmutableMultiDict(request.GET),
            header=Headers([(k, v) for k, v in request.headers.items() if "\n" not in v and "\r" not in v]),
            cookie=ImmutableMultiDict(),
        )


def assert_matches_openapi(response):
    """Fail unless ``response`` (from django.test.Client, to a path under /api/v1/ that a route
    answered) is an answer the OpenAPI document declares for that operation and status, with a
    body that matches its schema. Returns the response."""
    request = response.wsgi_request
    assert request.resolver_match is not None, f"{request.path} matched no route: nothing to check"
    _openapi().validate_response(_AnsweredRequest(request), DjangoOpenAPIResponse(response))
    return response


class ApiClient:
    """A django.test.Client that sends ``Authorization: Bearer <key>`` (when given a key) and
    checks every answer against the OpenAPI document."""

    def __init__(self, client, key: str | None = None):
        self.client = client
        self.key = key

    def _headers(self, headers: dict | None) -> dict:
        sent = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return {**sent, **(headers or {})}

    def get(self, path: str, data=None, *, headers: dict | None = None, check: bool = True):
        response = self.client.get(path, data, headers=self._headers(headers))
        return assert_matches_openapi(response) if check else response

    def post(self, path: str, data=None, *, content_type: str = "application/json", headers: dict | None = None,
             check: bool = True):
        response = self.client.post(path, data, content_type=content_type, headers=self._headers(headers))
        return assert_matches_openapi(response) if check else response


def answered(response, *, routed: bool = True):
    """``response`` when it is JSON and not a server error, an error being ``{"error": ...}``
    (checked against the OpenAPI document when a route answered it and ``routed``)."""
    assert response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    if response.status_code >= 400:
        assert set(body) <= {"error", "errors"} and body["error"], body
    if routed and response.wsgi_request.resolver_match is not None:
        assert_matches_openapi(response)
    return response
