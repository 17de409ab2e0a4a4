"""Requests per API key (API_RATE_LIMIT), counted with the ``limits`` package.

The counters live in the Redis of CELERY_BROKER_URL when it is a redis:// or rediss:// URL,
under keys of their own (``pipelines-api-rl``), so every web process shares them; with the
embedded broker they are kept in each process's memory, so each web worker process counts
on its own (N processes let up to N times the rate through). When Redis cannot be reached
the request is let through and a warning logged: the limit guards against storms, and the
broker being down is already reported elsewhere."""
from __future__ import annotations

import functools
import logging
import math
import threading
import time

from django.conf import settings
from django.http import HttpRequest
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from ninja.throttling import BaseThrottle

from apps.api.models import ApiKey

logger = logging.getLogger("apps.api")

KEY_PREFIX = "pipelines-api-rl"
OFF = ("", "0", "off")


def rate_items(rate: str) -> list[RateLimitItem]:
    """The limits of an API_RATE_LIMIT value; none when it is "0", "off" or empty.

    Raises ValueError when it is not one or more ``N/period`` rates separated by ";"."""
    if rate.strip().lower() in OFF:
        return []
    try:
        return parse_many(rate)
    except ValueError as exc:
        raise ValueError(f"API_RATE_LIMIT {rate!r} is not a rate such as '100/2 seconds': {exc}") from None


@functools.lru_cache(maxsize=4)
def _limiter(broker_url: str) -> MovingWindowRateLimiter:
    if broker_url.startswith(("redis://", "rediss://")):
        storage = storage_from_string(
            broker_url, key_prefix=KEY_PREFIX, wrap_exceptions=True, socket_timeout=1.0, socket_connect_timeout=1.0
        )
    else:
        storage = storage_from_string("memory://")
    return MovingWindowRateLimiter(storage)


class ApiKeyRateLimit(BaseThrottle):
    """ninja throttle: at most API_RATE_LIMIT requests per API key (``request.auth``, set by
    the auth that runs before throttles). A refused request gets 429 with Retry-After."""

    def __init__(self) -> None:
        # One throttle serves every request: ninja asks wait() right after a refusal, in the same thread.
        self._local = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        key = getattr(request, "auth", None)
        items = rate_items(settings.API_RATE_LIMIT)
        if not isinstance(key, ApiKey) or not items:
            return True
        limiter = _limiter(settings.CELERY_BROKER_URL)
        ident = str(key.pk)
        try:
            # Every rate is asked first and only then charged: a request one rate refuses uses up
            # none of the others (two requests at once may both pass the question; both are counted).
            for item in items:
                if not limiter.test(item, "key", ident):
                    return self._refused(limiter, item, ident)
            for item in items:
                if not limiter.hit(item, "key", ident):
                    return self._refused(limiter, item, ident)
        except StorageError as exc:
            logger.warning("event=api.rate_limit_unavailable error=%s", type(exc.storage_error).__name__)
        return True

    def _refused(self, limiter: MovingWindowRateLimiter, item: RateLimitItem, ident: str) -> bool:
        reset_at = limiter.get_window_stats(item, "key", ident).reset_time
        self._local.wait = max(1, math.ceil(reset_at - time.time()))
        return False

    def wait(self) -> float | None:
        """Seconds before the refused key may try again (at least 1)."""
        return getattr(self._local, "wait", None)
