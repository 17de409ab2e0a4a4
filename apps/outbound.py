"""Outbound HTTP for plug-ins that call other services (notify drivers, LLM providers).

Every request goes through ``http_post``: the URL must be http(s), and its host
must not resolve to a private, loopback, link-local or otherwise internal
address unless OUTBOUND_ALLOW_HOSTS allows it, so a definition cannot make a
worker call into the network it runs in. Every request has a timeout.
Messages name the host at most, never the full URL (URLs often embed tokens).
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import httpx
from django.conf import settings


class OutboundBlocked(Exception):
    """The URL may not be called: bad scheme, unresolvable, or an internal address."""


def _allowed(host: str, addresses: list[ipaddress._BaseAddress]) -> bool:
    for entry in settings.OUTBOUND_ALLOW_HOSTS:
        if entry.lower() == host.lower():
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if addresses and all(address in network for address in addresses):
            return True
    return False


def _internal(address: ipaddress._BaseAddress) -> bool:
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def url_check(url: str) -> None:
    """Raise OutboundBlocked unless ``url`` may be called."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundBlocked("only http:// and https:// URLs with a host can be called")
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundBlocked(f"cannot resolve host {host} ({exc})") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if _allowed(host, addresses):
        return
    internal = [str(a) for a in addresses if _internal(a)]
    if internal:
        raise OutboundBlocked(
            f"host {host} resolves to an internal address ({internal[0]}); "
            "allow it with OUTBOUND_ALLOW_HOSTS"
        )


def http_post(url: str, *, json: dict, headers: dict | None = None, timeout: float) -> httpx.Response:
    """POST ``json`` to ``url`` after url_check; raises OutboundBlocked or httpx errors.

    Redirects are not followed: a redirect could lead to an address url_check refused.
    """
    url_check(url)
    return httpx.post(url, json=json, headers=headers or {}, timeout=timeout, follow_redirects=False)
