"""Error answers under /api/ that Django or ninja make outside the API's own handlers (an
unknown path, a method a route does not take, a refused Host) become the API's JSON shape."""
from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.api.errors import INTERNAL_ERROR, error_response

_MESSAGES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found: no such API path",
    405: "Method not allowed on this path (see the Allow header)",
    413: "The request body is too large",
    500: INTERNAL_ERROR,
}


class ApiJsonErrorsMiddleware:
    """Replace any non-JSON error answer to a path under /api/ by ``{"error": ...}`` with the
    same status (and Allow header); other paths and JSON answers pass untouched."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not request.path.startswith("/api/")
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        status = response.status_code
        replaced = error_response(status, _MESSAGES.get(status, response.reason_phrase or "Error"))
        if response.has_header("Allow"):
            replaced["Allow"] = response["Allow"]
        if response.has_header("Retry-After"):
            replaced["Retry-After"] = response["Retry-After"]
        return replaced
