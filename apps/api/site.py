"""The API's one NinjaAPI instance (mounted at /api/v1/ by apps/api/urls.py): its parser,
error answers, rate limit and docs page. Routers are added in apps/api/urls.py."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from ninja import NinjaAPI, Swagger
from ninja.parser import Parser

from apps.api.body import bound_body_stream, json_body, refuse_declared_too_large
from apps.api.errors import ApiError, error_response, install_error_handlers
from apps.api.ratelimit import ApiKeyRateLimit


class BoundedJsonParser(Parser):
    """ninja's body parser, through apps.api.body.json_body (size, type and JSON limits)."""

    def parse_body(self, request: HttpRequest) -> Any:
        return json_body(request)


def _bounded_reads(run: Callable) -> Callable:
    # Before auth, so a body announced as too large is refused without reading a byte of it (as a
    # proxy's body limit would); and ninja reads request.body itself before the parser: bound that read.
    @functools.wraps(run)
    def bounded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            refuse_declared_too_large(request)
        except ApiError as exc:
            return error_response(exc.status_code, exc.message)
        bound_body_stream(request)
        return run(request, *args, **kwargs)

    return bounded


def api_build(*, urls_namespace: str = "api-v1") -> NinjaAPI:
    """A NinjaAPI with this project's parser (apps.api.body), error answers (apps.api.errors),
    per-key rate limit (apps.api.ratelimit), bounded body reads and local docs page; no routes."""
    built = NinjaAPI(
        title="Pipeline launcher API",
        version="1",
        description=(
            "Runs, definitions and schedules of the pipeline launcher, and the alert receiver. "
            "Every route needs an API key (`manage.py create_api_key`) sent as `Authorization: Bearer <key>`, "
            "with the scope the route names. Errors are JSON `{\"error\": \"...\"}`."
        ),
        urls_namespace=urls_namespace,
        parser=BoundedJsonParser(),
        throttle=[ApiKeyRateLimit()],
        # Served from the app's own static files (ninja in INSTALLED_APPS); no validator badge from swagger.io.
        docs=Swagger(settings={"validatorUrl": None}),
    )
    install_error_handlers(built)
    built.add_decorator(_bounded_reads, mode="view")
    return built


# The API at /api/v1/; apps/api/urls.py adds its routers.
api = api_build()
