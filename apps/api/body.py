"""Request bodies within bounds: at most API_MAX_BODY_BYTES, JSON only, and JSON that
apps/jsondata.py accepts. ``json_body`` is the one reader of API bodies: the ninja parser
(apps/api/site.py) and views reading a body themselves both call it."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest
from django.http.request import UnreadablePostError

from apps.api.errors import ApiError
from apps.jsondata import JsonInputError, loads


def _too_big() -> ApiError:
    return ApiError(413, f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes (API_MAX_BODY_BYTES)")


def _declared_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def refuse_declared_too_large(request: HttpRequest) -> None:
    """Raise ApiError 413 when ``request``'s Content-Length is over API_MAX_BODY_BYTES. Reads nothing."""
    declared = _declared_length(request)
    if declared is not None and declared > settings.API_MAX_BODY_BYTES:
        raise _too_big()


def bound_body_stream(request: HttpRequest) -> None:
    """Make reading ``request``'s body stop after API_MAX_BODY_BYTES + 1 bytes, whatever its
    Content-Length says, and make a chunked body (no Content-Length, from a server that ends
    the input itself, as gunicorn does) readable at all. Reads nothing itself."""
    if hasattr(request, "_body") or getattr(request, "_read_started", False):
        return
    limit = settings.API_MAX_BODY_BYTES + 1
    declared = _declared_length(request)
    environ = request.META
    if declared is None and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        if environ.get("wsgi.input_terminated") and "wsgi.input" in environ:
            request._stream = LimitedStream(environ["wsgi.input"], limit)  # type: ignore[assignment]
    elif declared is not None and declared > limit and "wsgi.input" in environ:
        request._stream = LimitedStream(environ["wsgi.input"], limit)  # type: ignore[assignment]


def raw_body(request: HttpRequest) -> bytes:
    """``request``'s body, read only when within API_MAX_BODY_BYTES.

    Raises ApiError 413 when Content-Length says more (nothing is read) or the body turns out
    longer (at most one byte past the limit is read); 400 when it cannot be read."""
    refuse_declared_too_large(request)
    bound_body_stream(request)
    try:
        body = request.body
    except RequestDataTooBig:
        raise _too_big() from None
    except UnreadablePostError:
        raise ApiError(400, "The request body could not be read") from None
    if len(body) > settings.API_MAX_BODY_BYTES:
        raise _too_big()
    return body


def is_json_type(content_type: str) -> bool:
    """Whether ``content_type`` (without parameters) names JSON: application/json or application/*+json."""
    kind = content_type.strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def json_body(request: HttpRequest) -> object:
    """``request``'s body parsed as JSON within the bounds of this module and apps/jsondata.py.

    Raises ApiError: 413 when it is larger than API_MAX_BODY_BYTES (checked before reading),
    415 when its Content-Type is not JSON or its charset not UTF-8, 400 when it is not UTF-8
    or not JSON jsondata accepts (too deep, NaN, NUL, huge numbers), with jsondata's message."""
    refuse_declared_too_large(request)
    if not is_json_type(request.content_type or ""):
        raise ApiError(415, "The request body must be JSON, sent with Content-Type: application/json")
    charset = (request.content_params or {}).get("charset", "utf-8").strip().lower()
    if charset not in ("utf-8", "utf8"):
        raise ApiError(415, "JSON must be encoded in UTF-8")
    body = raw_body(request)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "The request body is not valid UTF-8") from None
    try:
        return loads(text)
    except JsonInputError as exc:
        raise ApiError(400, f"The request body is not acceptable JSON: {exc}") from None
