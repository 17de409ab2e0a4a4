"""A URLconf for tests of the API's framework: an API built like the real one
(apps.api.site.api_build) with one route that reads a JSON body, at /api/echo/."""
from django.urls import path
from ninja import Schema

from apps.api.auth import ApiKeyAuth
from apps.api.body import json_body
from apps.api.site import api_build
from config import urls as config_urls

echo_api = api_build(urls_namespace="api-echo")


class EchoIn(Schema):
    value: object


@echo_api.post("/parsed", auth=ApiKeyAuth("runs:write"))
def parsed(request, body: EchoIn):
    """The body as ninja's parser read it."""
    return {"value": body.value}


@echo_api.post("/raw", auth=ApiKeyAuth("alerts"))
def raw(request):
    """The body as apps.api.body.json_body reads it (as a view reading its body itself does)."""
    return {"value": json_body(request)}




@echo_api.get("/boom", auth=ApiKeyAuth("runs:read"))
def boom(request):
    """A failure of the server's own, with details that must not reach the client."""
    raise RuntimeError("internal detail /srv/secret/path")


urlpatterns = [path("api/echo/", echo_api.urls), *config_urls.urlpatterns]
