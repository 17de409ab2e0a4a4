"""API keys: create, list, revoke, and recognise one in a request.

A key reads ``pl_<prefix>_<secret>``: the prefix (8 hex characters) is public
and finds the row; the secret is 32 random bytes. Only the SHA-256 of the whole
key is stored (a fast hash is right for a high-entropy random key: there is
nothing to guess), and it is compared in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.api.models import SCOPES, ApiKey

KEY_PREFIX = "pl_"
# 8 hex characters of prefix; token_urlsafe(32) gives 43 characters of the URL-safe alphabet.
_KEY = re.compile(r"pl_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")
NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# last_used_at is written at most this often per key, so a busy key costs no write per request.
LAST_USED_EVERY = timedelta(minutes=1)


class ApiKeyError(ValueError):
    """A key cannot be created or revoked; the message says why."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def scopes_check(scopes: list[str]) -> list[str]:
    """``scopes`` without repeats, in SCOPES order. Raises ApiKeyError naming an unknown scope,
    or when there is none."""
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise ApiKeyError(f"Unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}")
    if not scopes:
        raise ApiKeyError(f"A key needs at least one scope: {', '.join(SCOPES)}")
    return [scope for scope in SCOPES if scope in scopes]


def api_key_create(*, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Store a new key called ``name`` with ``scopes`` and return its row and the key itself,
    which exists nowhere else afterwards.

    Raises ApiKeyError for a bad name, an unknown scope or a name already taken; nothing is
    stored then."""
    if not _NAME.fullmatch(name):
        raise ApiKeyError(f"A key's name is {NAME_RULE}")
    scopes = scopes_check(scopes)
    if ApiKey.objects.filter(name=name).exists():
        raise ApiKeyError(f"A key named {name!r} already exists (revoke_api_key {name} first)")
    for _attempt in range(5):
        prefix = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                row = ApiKey.objects.create(name=name, prefix=prefix, key_hash=_digest(key), scopes=scopes)
        except IntegrityError:
            if ApiKey.objects.filter(name=name).exists():
                raise ApiKeyError(f"A key named {name!r} already exists (revoke_api_key {name} first)") from None
            continue  # the random prefix was taken: draw again
        return row, key
    raise ApiKeyError("Could not draw an unused key prefix; try again")


def api_key_revoke(*, name: str) -> None:
    """Delete the key called ``name``: requests carrying it are refused from now on.

    Raises ApiKeyError when no key has that name."""
    deleted, _ = ApiKey.objects.filter(name=name).delete()
    if not deleted:
        raise ApiKeyError(f"No API key named {name!r}")


def api_keys_list() -> list[ApiKey]:
    """Every key, by name (the rows hold no key, only its hash)."""
    return list(ApiKey.objects.order_by("name"))


def api_key_find(*, key: str) -> ApiKey | None:
    """The row of ``key`` when it is a current key, else None. Reads one row at most (none
    when ``key`` does not have a key's form) and writes nothing."""
    match = _KEY.fullmatch(key)
    if not match:
        return None
    row = ApiKey.objects.filter(prefix=match[1]).first()
    if row is None or not hmac.compare_digest(row.key_hash, _digest(key)):
        return None
    return row


def api_key_used(key: ApiKey) -> None:
    """Record that ``key`` was just accepted: writes last_used_at when the row read says it is
    older than LAST_USED_EVERY (one conditional UPDATE, so concurrent requests write it once)."""
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_EVERY:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY)
    ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
    key.last_used_at = now
