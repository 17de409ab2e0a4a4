"""Who is calling: the API key of ``Authorization: Bearer <key>`` and the scope a route needs.

Each route is given an ``ApiKeyAuth(scope)``; a missing or unknown key is a 401 and a key
without the scope a 403, before the view runs. ``request_key`` does the same for plain
Django views (/metrics)."""
from __future__ import annotations

from django.http import HttpRequest
from ninja.errors import AuthenticationError, AuthorizationError
from ninja.security.http import HttpBearer

from apps.api.keys import api_key_find, api_key_used
from apps.api.models import SCOPES, ApiKey


def request_key(request: HttpRequest, scope: str) -> ApiKey:
    """The API key ``request`` carries, when it is a current key with ``scope``; records its
    use (apps.api.keys.api_key_used) then.

    Raises ninja's AuthenticationError (401) when the header is missing, not a Bearer key or
    not a current key, and AuthorizationError (403) when the key lacks ``scope``. The header's
    value is never logged or echoed."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise AuthenticationError(401, "An API key is required: send Authorization: Bearer <key>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(401, "The Authorization header must be: Bearer <key>")
    key = api_key_find(key=token.strip())
    if key is None:
        raise AuthenticationError(401, "The API key is not valid (unknown or revoked)")
    if scope not in key.scopes:
        raise AuthorizationError(403, f"This API key does not have the scope {scope!r}")
    api_key_used(key)
    return key


class ApiKeyAuth(HttpBearer):
    """ninja auth for a route that needs ``scope``: ``request.auth`` is then the ApiKey row.

    In the OpenAPI document it is the HTTP bearer scheme; the scope is in each route's text."""

    def __init__(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"Unknown scope {scope!r}: choose from {', '.join(SCOPES)}")
        self.scope = scope
        super().__init__()

    def __call__(self, request: HttpRequest) -> ApiKey:
        # Not HttpBearer's own: that one logs the whole header (the key) when DEBUG is on.
        return request_key(request, self.scope)

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        """Unused (``__call__`` reads the header itself); present because HttpBearer requires it."""
        return api_key_find(key=token)
