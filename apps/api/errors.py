"""The API's one error shape: ``{"error": "..."}`` (plus ``"errors": [...]`` for a list of
validation problems), whatever went wrong, and never an HTML page or a traceback."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.request import UnreadablePostError
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

from apps.text import printable

logger = logging.getLogger("apps.api")

# Shown for any failure of ours: what went wrong is in the log, not in the answer.
INTERNAL_ERROR = "Internal error: the server could not answer this request (see the web service's log)"


class ApiError(HttpError):
    """An answer other than success, with its status and message; ``errors`` lists the
    problems found when there are several (a definition's validation messages)."""

    def __init__(self, status_code: int, message: str, errors: list[str] | None = None) -> None:
        super().__init__(status_code, message)
        self.errors = errors


def error_response(status: int, message: str, errors: list[str] | None = None) -> JsonResponse:
    """The JSON answer ``{"error": message}`` (and ``"errors"`` when given) with ``status``."""
    body: dict[str, object] = {"error": message}
    if errors is not None:
        body["errors"] = errors
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def _http_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    # ninja answers a body its parser refused with its own HttpError(400) raised from ours.
    cause = exc.__cause__
    if isinstance(cause, HttpError):
        exc = cause
    elif cause is not None:
        return error_response(400, "The request body could not be read as JSON")
    assert isinstance(exc, HttpError)
    return error_response(exc.status_code, exc.message, getattr(exc, "errors", None))


def _throttled(request: HttpRequest, exc: Exception) -> HttpResponse:
    # ninja adds the Retry-After header to this answer.
    return error_response(429, "Too many requests for this API key (API_RATE_LIMIT); retry after Retry-After seconds")


def _problem(error: dict) -> str:
    loc = list(error.get("loc", ()))
    # ninja locates a body field as ("body", <the view's parameter name>, field...): the field is what the client sent.
    if loc[:1] == ["body"] and len(loc) > 2:
        loc = loc[2:]
    where = ".".join(str(part) for part in loc)
    text = f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))
    return printable(text)[:300]


def _validation_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    assert isinstance(exc, ValidationError)
    problems = [_problem(error) for error in exc.errors[:20]]
    return error_response(400, "The request is not valid", problems)


def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(404, "Not found")


def _too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
    limit = settings.API_MAX_BODY_BYTES
    return error_response(413, f"The request body is larger than {limit} bytes (API_MAX_BODY_BYTES)")


def _unreadable(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(400, "The request body could not be read")


def _internal(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The traceback goes to the log (through the secret scrubber), never to the client.
    logger.error("event=api.error method=%s path=%s", request.method, printable(request.path[:200]), exc_info=exc)
    return error_response(500, INTERNAL_ERROR)


_HANDLERS: dict[type[Exception], Callable[[HttpRequest, Any], HttpResponse]] = {
    HttpError: _http_error,
    AuthenticationError: _http_error,
    Throttled: _throttled,
    ValidationError: _validation_error,
    Http404: _not_found,
    RequestDataTooBig: _too_big,
    UnreadablePostError: _unreadable,
    Exception: _internal,
}


def install_error_handlers(api: NinjaAPI) -> None:
    """Replace ninja's error answers on ``api`` by this module's JSON shape."""
    for exc_class, handler in _HANDLERS.items():
        api.add_exception_handler(exc_class, handler)
