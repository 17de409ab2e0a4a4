"""Outbound calls for plug-ins that reach other services (notify drivers, LLM providers).

Every HTTP request goes through ``http_post``, and every SMTP connection to a
host a definition chose goes through ``host_check`` and ``tcp_connect``:

- The URL must be http(s) with a well-formed host and port; a malformed one is
  refused with a message that names the host at most (URLs often embed tokens,
  and a port field may hold anything).
- The host is resolved once, through ``resolver``, and every address it gives
  must be allowed: globally reachable by the explicit rule of
  ``address_global`` (IPv4 carried inside IPv6 is judged by the IPv4), or
  inside a network listed in OUTBOUND_ALLOW_HOSTS, or the host name itself is
  listed there.
- The connection is made to an address that was checked, never to a fresh
  lookup of the name, so a DNS answer that changes between the check and the
  connection (rebinding) cannot move it. TLS still checks the certificate
  against the host name, and the Host header still carries it.
- Proxies and .netrc from the environment are ignored (trust_env=False): a
  proxy would make the connection to a name of its own choosing, around the
  guard. SSL_CERT_FILE / SSL_CERT_DIR are still honoured for CA certificates.
- Redirects are not followed, and a response body is read up to
  OUTBOUND_MAX_RESPONSE_BYTES (decoded and received alike).
- A request's timeout is a deadline for the whole exchange: connecting,
  sending, and reading the answer to its last byte (apps.deadline; httpx's
  own timeouts bound each read alone, which a server sending one byte a
  second never trips).

Messages name the host at most, never the URL. Anything unexpected inside the
guard leaves as OutboundError naming only its class.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from apps.deadline import DeadlineExceeded, ExchangeDeadline

if TYPE_CHECKING:
    from _socket import _Address  # typeshed's type of socket.create_connection's source_address

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
# Only encodings decoded here under the size limit are asked for (httpx would add br/zstd when installed).
ACCEPT_ENCODING = "gzip, deflate"
# Headers of the received answer that describe the raw body, not the decoded one returned.
_RAW_BODY_HEADERS = {"content-encoding", "content-length", "transfer-encoding"}
_HOST_LABELS = re.compile(
    r"(?=.{1,254}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
)

# IPv4 networks that are not globally reachable (IANA IPv4 Special-Purpose Address Registry,
# made strict: 192.0.0.0/24 is refused whole).
_IPV4_NOT_GLOBAL = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier-grade NAT, cloud metadata at 100.100.100.200)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata at 169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the limited broadcast 255.255.255.255
    )
)
# Only IANA's global unicast block is reachable; loopback, ULA, link-local, multicast... lie outside it.
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV6_NOT_GLOBAL = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments (Teredo, 2001::/32, is judged by its IPv4 first)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
# Forms that carry an IPv4 address in their last 32 bits: IPv4-compatible and NAT64's well-known prefix.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


class OutboundError(Exception):
    """An outbound call failed in a way the guard reports itself: the answer
    was too large or undecodable, or something unexpected happened. The
    message names the host at most."""


class OutboundBlocked(OutboundError):
    """The call may not be made: bad scheme, malformed URL, unresolvable host,
    or an address that is not allowed. Raised before any connection."""


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the order the system prefers; raises OSError."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # An IPv4 or IPv6 socket address starts with the address as a string.
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# The one place names are resolved: tests replace it with fixed answers.
resolver = system_resolve


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address carries (Teredo: server and client), or None."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    # ipaddress returns None for these two only outside their networks, checked here first.
    if address in _SIX_TO_FOUR and address.sixtofour is not None:
        return [address.sixtofour]
    if address in _TEREDO and address.teredo is not None:
        return list(address.teredo)
    return None


def address_global(address: Address) -> bool:
    """Whether ``address`` is globally reachable, by this module's own tables
    (Python's ``is_global`` changed between versions). An IPv6 address that
    carries an IPv4 one (mapped, compatible, NAT64, 6to4, Teredo) is global
    only when every IPv4 address inside is."""
    if isinstance(address, ipaddress.IPv4Address):
        return not any(address in network for network in _IPV4_NOT_GLOBAL)
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return all(address_global(inner) for inner in embedded)
    return address in _IPV6_GLOBAL_UNICAST and not any(address in network for network in _IPV6_NOT_GLOBAL)


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for entry in settings.OUTBOUND_ALLOW_HOSTS:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue  # a host name
    return networks


def _name_allowed(host: str) -> bool:
    return any(same_host(entry, host) for entry in settings.OUTBOUND_ALLOW_HOSTS)


def same_host(a: str, b: str) -> bool:
    """Whether two host names are the same name (case and a final dot aside)."""
    return a.strip().lower().rstrip(".") == b.strip().lower().rstrip(".")


def address_allowed(address: Address) -> bool:
    """Whether a connection to ``address`` is allowed: it is global (see
    address_global) or inside a network listed in OUTBOUND_ALLOW_HOSTS."""
    if address_global(address):
        return True
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)  # a dual-stack socket reaches the IPv4 address itself
    return any(
        candidate.version == network.version and candidate in network
        for network in _allowed_networks()
        for candidate in candidates
    )


def _ascii_host(host: str) -> str:
    """``host`` as it goes on the wire (IDNA for a name); raises OutboundBlocked."""
    host = host.strip().lower()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        name = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise OutboundBlocked("the host is not a valid host name") from None
    if not _HOST_LABELS.fullmatch(name):
        raise OutboundBlocked("the host is not a valid host name")
    return name.rstrip(".")  # a final dot would spoil the TLS name check and the Host header


def host_check(host: str, *, port: int) -> list[str]:
    """Resolve ``host`` once and return its addresses, each of them allowed.

    An IP literal is not resolved. Raises OutboundBlocked naming the host when
    it cannot be resolved or any address it has is not allowed (see
    address_allowed), unless OUTBOUND_ALLOW_HOSTS lists the host name."""
    host = _ascii_host(host)
    literal = True
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        literal = False
        try:
            addresses = list(resolver(host, port))
        except socket.gaierror as exc:
            raise OutboundBlocked(f"cannot resolve host {host} ({exc.strerror or type(exc).__name__})") from None
        except (OSError, UnicodeError) as exc:
            raise OutboundBlocked(f"cannot resolve host {host} ({type(exc).__name__})") from None
    if not addresses:
        raise OutboundBlocked(f"cannot resolve host {host} (no address)")
    try:
        # An IPv6 zone (fe80::1%eth0) is dropped: link-local addresses are refused unless listed anyway.
        checked = [str(ipaddress.ip_address(str(a).split("%")[0])) for a in addresses]
    except ValueError:
        raise OutboundBlocked(f"cannot resolve host {host} (not an IP address in the answer)") from None
    if _name_allowed(host):
        return checked
    for address in checked:
        if not address_allowed(ipaddress.ip_address(address)):
            if literal:
                problem = f"address {host} is not a public address"
            else:
                problem = f"host {host} resolves to a non-public address ({address})"
            raise OutboundBlocked(f"{problem}; allow it with OUTBOUND_ALLOW_HOSTS")
    return checked


def tcp_connect(
    addresses: list[str], port: int, timeout: float | None, *, source_address: _Address | None = None
) -> socket.socket:
    """A TCP connection to the first of ``addresses`` (checked ones) that answers.

    No name is resolved. Raises the last OSError when none can be reached; a
    timeout ends the attempt at once."""
    last: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout, source_address)
        except TimeoutError:
            raise
        except OSError as exc:
            last = exc
    raise last


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and what to say to the server there."""

    scheme: str
    host: str  # the name (ASCII), or an IP literal without brackets
    port: int
    userinfo: str
    path: str  # path and query, as written
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def is_name(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return True
        return False

    def pinned_url(self, address: str) -> str:
        """The URL with its host replaced by ``address``, which the request then connects to."""
        literal = f"[{address}]" if ":" in address else address
        userinfo = f"{self.userinfo}@" if self.userinfo else ""
        return f"{self.scheme}://{userinfo}{literal}:{self.port}{self.path}"


def url_host(url: str) -> str:
    """The host of ``url`` for messages, "" when the URL has none or cannot be parsed."""
    try:
        return urlsplit(url).hostname or ""
    except (ValueError, TypeError, AttributeError):
        return ""


def url_check(url: str) -> Target:
    """Parse ``url``, resolve its host once and check every address (host_check).

    Raises OutboundBlocked for a scheme other than http(s), a malformed URL
    (bad port, bad IPv6 literal, bad host name) or a refused host; the
    message never contains any part of the URL but the host name."""
    try:
        parts = urlsplit(url)
        scheme, hostname = parts.scheme.lower(), parts.hostname
    except (ValueError, AttributeError, TypeError):
        raise OutboundBlocked("the URL is malformed (its host cannot be read)") from None
    if scheme not in DEFAULT_PORTS or not hostname:
        raise OutboundBlocked("only http:// and https:// URLs with a host can be called")
    try:
        port = parts.port
    except ValueError:
        port = 0
    # The port text is left out of the message: it is part of a URL that may be a secret.
    if port == 0:
        raise OutboundBlocked(f"the URL for host {_ascii_host(hostname)} has a malformed port")
    port = port or DEFAULT_PORTS[scheme]
    userinfo = parts.netloc.rpartition("@")[0]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = _ascii_host(hostname)
    return Target(scheme, host, port, userinfo, path, tuple(host_check(host, port=port)))


class _BoundedDecoder:
    """Decodes a body (identity, gzip or deflate) and refuses it past ``limit`` decoded bytes."""

    def __init__(self, encoding: str, *, host: str, limit: int):
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip().lower() not in ("", "identity")]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise OutboundError(f"the answer from {host} has a Content-Encoding this client cannot decode")
        self.coding = codings[0] if codings else ""
        self.host, self.limit, self.size = host, limit, 0
        self._zlib = None
        if self.coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif self.coding == "deflate":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS)
        self._started = False

    def too_large(self) -> OutboundError:
        return OutboundError(f"the answer from {self.host} is larger than {self.limit} bytes")

    def decode(self, data: bytes) -> bytes:
        if self._zlib is None:
            out = data
        else:
            room = self.limit - self.size + 1  # one byte more than allowed tells "too large"
            try:
                out = self._zlib.decompress(data, room)
            except zlib.error:
                if self.coding != "deflate" or self._started:
                    raise OutboundError(f"the answer from {self.host} cannot be decoded") from None
                # Some servers send "deflate" without the zlib header, as httpx also accepts: retry once raw.
                self._zlib, self._started = zlib.decompressobj(-zlib.MAX_WBITS), True
                return self.decode(data)
            self._started = True
        self.size += len(out)
        if self.size > self.limit:
            raise self.too_large()
        return out

    def flush(self) -> bytes:
        if self._zlib is None:
            return b""
        out = self._zlib.flush()
        self.size += len(out)
        if self.size > self.limit:
            raise self.too_large()
        return out


def _read_bounded(response: httpx.Response, host: str, limit: int) -> bytes:
    """The decoded body of a streamed ``response``, refused past ``limit`` bytes received or decoded."""
    decoder = _BoundedDecoder(response.headers.get("content-encoding", ""), host=host, limit=limit)
    chunks, received = [], 0
    for raw in response.iter_raw():
        received += len(raw)
        if received > limit:
            raise decoder.too_large()
        chunks.append(decoder.decode(raw))
    chunks.append(decoder.flush())
    return b"".join(chunks)


def _ssl_context():
    # The environment's CA settings still apply; only proxies are ignored.
    return httpx.create_ssl_context(trust_env=True)


def _post_pinned(target: Target, *, json: dict, headers: dict, timeout: float) -> httpx.Response:
    limit = settings.OUTBOUND_MAX_RESPONSE_BYTES
    headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "accept-encoding")}
    headers.update({"Host": target.host_header, "Accept-Encoding": ACCEPT_ENCODING})
    # httpcore verifies the certificate against sni_hostname when it is given.
    extensions = {"sni_hostname": target.host} if target.scheme == "https" and target.is_name else {}
    verify = _ssl_context() if target.scheme == "https" else True
    deadline = ExchangeDeadline(timeout)
    request_extensions: dict[str, object] = {**extensions, "trace": deadline.trace}
    with httpx.Client(trust_env=False, follow_redirects=False, verify=verify) as client, deadline:
        for index, address in enumerate(target.addresses):
            try:
                # Each step waits at most what is left of the deadline; the deadline ends a step that dribbles.
                with client.stream(
                    "POST", target.pinned_url(address), json=json, headers=headers,
                    extensions=request_extensions, timeout=deadline.remaining(),
                ) as response:
                    body = _read_bounded(response, target.host, limit)
                    kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _RAW_BODY_HEADERS]
                    if deadline.expired:  # the last byte came as the socket was shut down
                        raise deadline.error()
                    return httpx.Response(
                        response.status_code, headers=kept, content=body, request=response.request
                    )
            except (httpx.HTTPError, OutboundError) as exc:
                # Every step waits at most what is left: any timeout of one is the deadline's.
                if (deadline.expired or isinstance(exc, httpx.TimeoutException)) and not isinstance(
                    exc, DeadlineExceeded
                ):
                    raise deadline.error() from None
                # Nothing was sent yet after a ConnectError: the next checked address may answer.
                if not isinstance(exc, httpx.ConnectError) or index == len(target.addresses) - 1:
                    raise
    raise OutboundBlocked(f"cannot resolve host {target.host} (no address)")


def http_post(url: str, *, json: dict, headers: dict | None = None, timeout: float) -> httpx.Response:
    """POST ``json`` to ``url`` after url_check, connecting only to checked
    addresses, and return the response with its body read (decoded, at most
    OUTBOUND_MAX_RESPONSE_BYTES).

    ``timeout`` is a deadline for the whole exchange (connect, send, read the
    whole answer); past it the call raises DeadlineExceeded, an
    httpx.TimeoutException.

    Raises OutboundBlocked before connecting, OutboundError for an answer that
    is too large or undecodable (or anything unexpected, by class name only),
    and httpx.TimeoutException / httpx.TransportError / httpx.HTTPError for
    network failures (their messages may contain the URL: report the class).
    Redirects are not followed: a redirect could lead anywhere.
    """
    try:
        target = url_check(url)
        return _post_pinned(target, json=json, headers=dict(headers or {}), timeout=timeout)
    except (OutboundError, httpx.HTTPError, SoftTimeLimitExceeded):
        raise  # reported by class already, or the run's time limit, which the engine records
    except Exception as exc:  # noqa: BLE001 - httpx.InvalidURL, a bad header value... carry the URL or worse
        host = url_host(url)
        where = f"the request to {host}" if host and _HOST_LABELS.fullmatch(host) else "the request"
        raise OutboundError(f"{where} failed ({type(exc).__name__})") from None
