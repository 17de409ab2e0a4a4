"""Schemas every router shares: the error answer, and the error statuses a route declares in
the OpenAPI document."""
from __future__ import annotations

from ninja import Schema


class ErrorOut(Schema):
    """Every error answer: what went wrong, and for validation problems each one."""

    error: str
    errors: list[str] | None = None


# What any route with an API key may answer besides its own: declare them with
# ``response={200: Out, **AUTH_ERRORS}`` (add 404 and BODY_ERRORS where they apply).
AUTH_ERRORS: dict[int, type[Schema]] = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 429: ErrorOut, 500: ErrorOut}
# What a route reading a JSON body may answer besides AUTH_ERRORS.
BODY_ERRORS: dict[int, type[Schema]] = {413: ErrorOut, 415: ErrorOut}
NOT_FOUND: dict[int, type[Schema]] = {404: ErrorOut}
