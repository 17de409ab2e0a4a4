"""The outbound guard: which addresses may be called, pinning to the checked
address, bounded answers and clean errors.

No test sends a packet off this machine: refusals of public, private and
link-local addresses are checked through fixed DNS answers (the guard refuses
before connecting), public addresses are only checked, never connected to,
and the one test that does connect to a public address runs in a network
namespace without routes, where the connection fails at once.
"""
from __future__ import annotations

import gzip
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import pytest

from apps.deadline import DeadlineExceeded
from apps.outbound import OutboundBlocked, OutboundError, address_global, host_check, http_post, url_check
from tests.httpserver import start_dribbling_server, start_server

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

# The list, and more of the same kinds; every one must be refused.
NOT_ALLOWED = [
    "100.64.0.1",  # shared address space
    "100.100.100.200",  # a cloud metadata service inside it
    "100.127.255.255",
    "169.254.169.254",  # link-local metadata
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",
    "240.0.0.1",
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "192.0.0.9",
    "192.0.2.1",
    "198.18.0.1",
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::7f00:1",
    "64:ff9b:1::808:808",  # local-use NAT64 prefix
    "2001:0:4136:e378:8000:63bf:3f57:fefe",  # Teredo: public server, client 192.168.1.1
    "2001:0:a00:1::f7f7:f7f7",  # Teredo: server 10.0.0.1, public client
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "::1",
    "::",
    "2001:db8::1",
    "100::1",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "2001:0:4136:e378::f7f7:f7f7",  # Teredo: both public
]


@pytest.fixture(autouse=True)
def no_allow_list(settings):
    settings.OUTBOUND_ALLOW_HOSTS = []


# --- which addresses are allowed ---------------------------------------------


@pytest.mark.parametrize("address", NOT_ALLOWED)
def test_internal_and_special_addresses_are_not_global(address):
    assert address_global(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_global(address):
    assert address_global(ipaddress.ip_address(address)) is True


@pytest.mark.parametrize("address", NOT_ALLOWED)
def test_a_name_resolving_to_an_internal_address_is_refused(fixed_dns, address):
    fixed_dns.add("svc.example", [address])
    with pytest.raises(OutboundBlocked) as refused:
        host_check("svc.example", port=443)
    assert str(refused.value) == (
        f"host svc.example resolves to a non-public address ({ipaddress.ip_address(address)}); "
        "allow it with OUTBOUND_ALLOW_HOSTS"
    )


@pytest.mark.parametrize("address", NOT_ALLOWED)
def test_an_internal_ip_literal_is_refused_without_a_lookup(fixed_dns, address):
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(OutboundBlocked, match="is not a public address; allow it with OUTBOUND_ALLOW_HOSTS"):
        http_post(f"http://{literal}:8080/hook", json={}, timeout=1)
    assert fixed_dns.calls == []


@pytest.mark.parametrize("address", PUBLIC)
def test_a_name_resolving_to_a_public_address_passes_the_check(fixed_dns, address):
    # Checking only: nothing connects to these addresses.
    fixed_dns.add("api.example", [address])
    assert host_check("api.example", port=443) == [str(ipaddress.ip_address(address))]


def test_one_internal_address_among_public_ones_refuses_the_host(fixed_dns):
    fixed_dns.add("mixed.example", ["8.8.8.8", "2606:4700::1111", "10.0.0.7"])
    with pytest.raises(OutboundBlocked, match=r"\(10\.0\.0\.7\)"):
        url_check("https://mixed.example/v1")


def test_an_unresolvable_host_is_refused_naming_it(fixed_dns):
    with pytest.raises(OutboundBlocked, match=r"^cannot resolve host nowhere\.example \(Name or service not known\)$"):
        url_check("https://nowhere.example/x")


def test_allow_list_networks_allow_their_addresses_only(fixed_dns, settings):
    settings.OUTBOUND_ALLOW_HOSTS = ["10.0.0.0/8", "fd00::/8"]
    fixed_dns.add("ollama.internal", ["10.1.2.3", "fd00::3"])
    fixed_dns.add("metadata.internal", ["10.1.2.3", "169.254.169.254"])
    assert host_check("ollama.internal", port=11434) == ["10.1.2.3", "fd00::3"]
    with pytest.raises(OutboundBlocked, match=r"\(169\.254\.169\.254\)"):
        host_check("metadata.internal", port=80)


def test_allow_list_network_covers_the_ipv4_mapped_form(fixed_dns, settings):
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    fixed_dns.add("local.example", ["::ffff:127.0.0.1"])
    assert host_check("local.example", port=80) == [str(ipaddress.ip_address("::ffff:127.0.0.1"))]


def test_allow_list_host_name_allows_whatever_it_resolves_to(fixed_dns, settings):
    settings.OUTBOUND_ALLOW_HOSTS = ["Ollama.Internal"]
    fixed_dns.add("ollama.internal", ["192.168.1.20"])
    assert host_check("ollama.internal", port=11434) == ["192.168.1.20"]


# --- malformed URLs ----------------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://hooks.example:s3cr3tp0rt/T0/s3cr3t", "the URL for host hooks.example has a malformed port"),
        ("http://hooks.example:99999/T0/s3cr3t", "the URL for host hooks.example has a malformed port"),
        ("http://hooks.example:0/T0/s3cr3t", "the URL for host hooks.example has a malformed port"),
        ("http://[::1/T0/s3cr3t", "the URL is malformed (its host cannot be read)"),
        ("http://[zz::s3cr3t]/T0", "the URL is malformed (its host cannot be read)"),
        ("http://s3cr3t host.example/T0", "the host is not a valid host name"),
        ("ftp://files.example/s3cr3t", "only http:// and https:// URLs with a host can be called"),
        ("http:///s3cr3t", "only http:// and https:// URLs with a host can be called"),
    ],
)
def test_a_malformed_url_is_refused_with_no_part_of_it_but_the_host(fixed_dns, url, message):
    with pytest.raises(OutboundBlocked) as refused:
        http_post(url, json={}, timeout=1)
    assert str(refused.value) == message
    assert "s3cr3t" not in str(refused.value) and "99999" not in str(refused.value)
    assert fixed_dns.calls == []


# --- the connection goes to the checked address ----------------------------


def start_pair():
    """Recording servers on 127.0.0.2 and 127.0.0.1, on the same port; returns them and a stop function."""
    for _ in range(20):
        second, stop_second = start_server(host="127.0.0.2")
        try:
            first, stop_first = start_server(host="127.0.0.1", port=second.port)
        except OSError:  # that port is taken on 127.0.0.1: try another
            stop_second()
            continue

        def stop(stop_first=stop_first, stop_second=stop_second):
            stop_first()
            stop_second()

        return second, first, stop
    pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")


def test_a_rebinding_name_cannot_move_the_connection_to_another_address(fixed_dns, settings):
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.2/32"]
    allowed, loopback, stop = start_pair()
    try:
        fixed_dns.add("rebind.example", ["127.0.0.2"], ["127.0.0.1"])
        response = http_post(f"http://rebind.example:{allowed.port}/hook?x=1", json={"a": 1}, timeout=5)
        assert response.status_code == 200
        assert fixed_dns.calls == ["rebind.example"]  # resolved once, for the check and the connection
        [request] = allowed.requests
        assert request["headers"]["host"] == f"rebind.example:{allowed.port}"
        assert (request["path"], request["json"]) == ("/hook?x=1", {"a": 1})
        assert loopback.requests == []
        # The next call resolves again, gets the loopback address, and is refused before connecting.
        with pytest.raises(OutboundBlocked, match=r"\(127\.0\.0\.1\)"):
            http_post(f"http://rebind.example:{allowed.port}/hook", json={}, timeout=5)
        assert loopback.requests == [] and len(allowed.requests) == 1
    finally:
        stop()


NAMESPACE_SCRIPT = """
import json, os
import django
django.setup()
from django.conf import settings
from apps import outbound
from tests.dns import FixedResolver
from tests.httpserver import start_server

settings.OUTBOUND_ALLOW_HOSTS = []
server, stop = start_server()
resolver = FixedResolver()
resolver.add("rebind.example", ["8.8.8.8"], ["127.0.0.1"])
outbound.resolver = resolver
try:
    outbound.http_post(f"http://rebind.example:{server.port}/hook", json={}, timeout=5)
    outcome = "answered"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
finally:
    stop()
print(json.dumps({"outcome": outcome, "requests": len(server.requests), "calls": resolver.calls}))
"""


def namespace_available() -> bool:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10)
    return probe.returncode == 0


def test_a_name_answering_public_then_loopback_never_reaches_the_loopback_service():
    if not namespace_available():
        pytest.skip("unshare -rn (a network namespace without routes) is not available here")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "OUTBOUND_ALLOW_HOSTS"}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # In a namespace with only `lo`, 8.8.8.8 is unreachable at once: no packet can leave.
    command = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1"', sys.executable, NAMESPACE_SCRIPT]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["calls"] == ["rebind.example"]
    assert result["outcome"].startswith("ConnectError:") and "unreachable" in result["outcome"], result
    assert result["requests"] == 0


def test_proxies_from_the_environment_are_not_used(http_server, fixed_dns, monkeypatch):
    proxy, stop_proxy = start_server()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url())
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        fixed_dns.add("hook.example", ["127.0.0.1"])
        assert http_post(f"http://hook.example:{http_server.port}/h", json={}, timeout=5).status_code == 200
        assert proxy.requests == []
        assert http_server.last["headers"]["host"] == f"hook.example:{http_server.port}"
    finally:
        stop_proxy()


def test_redirects_are_not_followed(http_server):
    target, stop_target = start_server()
    try:
        http_server.status, http_server.headers = 302, {"Location": target.url("/elsewhere")}
        response = http_post(http_server.url("/hook"), json={}, timeout=5)
        assert response.status_code == 302
        assert target.requests == []
    finally:
        stop_target()


def test_credentials_in_the_url_are_still_sent_as_basic_auth(http_server):
    http_post(f"http://mon:pa55word@127.0.0.1:{http_server.port}/hook", json={}, timeout=5)
    assert http_server.last["headers"]["authorization"] == "Basic bW9uOnBhNTV3b3Jk"


def test_tls_to_the_pinned_address_still_checks_the_certificate_name(tls_certificate, fixed_dns, settings, monkeypatch):
    cert, key = tls_certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server, stop = start_server(ssl_context=context)
    try:
        settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the environment's CA file still counts
        fixed_dns.add("tls.example", ["127.0.0.1"])
        fixed_dns.add("other.example", ["127.0.0.1"])
        response = http_post(f"https://tls.example:{server.port}/v1", json={}, timeout=5)
        assert response.status_code == 200
        assert server.last["headers"]["host"] == f"tls.example:{server.port}"
        # Same address, another name: the certificate does not match it, so nothing is sent.
        with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
            http_post(f"https://other.example:{server.port}/v1", json={}, timeout=5)
        assert len(server.requests) == 1
    finally:
        stop()


# --- bounded answers ---------------------------------------------------------


def test_an_answer_larger_than_the_limit_is_refused_naming_host_and_limit(http_server):
    http_server.answer_raw(b"x" * (2 * MIB))
    with pytest.raises(OutboundError) as refused:
        http_post(http_server.url("/hook"), json={}, timeout=5)
    assert str(refused.value) == "the answer from 127.0.0.1 is larger than 1048576 bytes"


def test_a_compressed_answer_is_limited_by_its_decoded_size(http_server):
    http_server.answer_raw(gzip.compress(b"\0" * (2 * MIB)))  # about 2 KiB on the wire
    http_server.headers = {"Content-Encoding": "gzip"}
    with pytest.raises(OutboundError, match=r"^the answer from 127\.0\.0\.1 is larger than 1048576 bytes$"):
        http_post(http_server.url("/hook"), json={}, timeout=5)


@pytest.mark.parametrize("encoding, encode", [("gzip", gzip.compress), ("deflate", zlib.compress), ("", bytes)])
def test_an_answer_within_the_limit_is_decoded(http_server, encoding, encode):
    http_server.answer_raw(encode(json.dumps({"ok": True, "pad": "y" * 1000}).encode()), content_type="application/json")
    if encoding:
        http_server.headers = {"Content-Encoding": encoding}
    response = http_post(http_server.url("/hook"), json={}, timeout=5)
    assert response.json() == {"ok": True, "pad": "y" * 1000}
    assert "content-encoding" not in response.headers
    assert http_server.last["headers"]["accept-encoding"] == "gzip, deflate"


def test_the_limit_comes_from_the_settings(http_server, settings):
    settings.OUTBOUND_MAX_RESPONSE_BYTES = 100
    http_server.answer_raw(b"z" * 100)
    assert http_post(http_server.url("/hook"), json={}, timeout=5).content == b"z" * 100
    http_server.answer_raw(b"z" * 101)
    with pytest.raises(OutboundError, match=r"larger than 100 bytes"):
        http_post(http_server.url("/hook"), json={}, timeout=5)


def test_an_unknown_content_encoding_is_a_clean_error(http_server):
    http_server.headers = {"Content-Encoding": "br"}
    with pytest.raises(OutboundError, match=r"^the answer from 127\.0\.0\.1 has a Content-Encoding"):
        http_post(http_server.url("/hook"), json={}, timeout=5)


# --- anything unexpected -----------------------------------------------------


def test_an_unexpected_error_inside_the_guard_names_only_its_class(http_server):
    # httpx cannot encode this header value; its own error would quote it.
    with pytest.raises(OutboundError) as failed:
        http_post(http_server.url("/s3cr3t"), json={}, headers={"X-Team": "équipe"}, timeout=5)
    assert str(failed.value) == "the request to 127.0.0.1 failed (UnicodeEncodeError)"
    assert failed.value.__cause__ is None
    assert http_server.requests == []


def test_a_resolver_answer_that_is_not_an_address_is_a_clean_refusal(fixed_dns):
    fixed_dns.add("odd.example", ["not-an-address"])
    with pytest.raises(OutboundBlocked, match=r"^cannot resolve host odd\.example \(not an IP address in the answer\)$"):
        host_check("odd.example", port=80)


def test_a_fully_qualified_name_with_a_final_dot_is_checked_as_the_name(http_server, fixed_dns):
    fixed_dns.add("hook.example", ["127.0.0.1"])
    http_post(f"http://hook.example.:{http_server.port}/h", json={}, timeout=5)
    assert http_server.last["headers"]["host"] == f"hook.example:{http_server.port}"


# --- the timeout is a deadline for the whole exchange --------------------------------------


@pytest.fixture
def dribbling(settings):
    """Start a DribblingServer (allowed as an outbound target); stopped after the test."""
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    stops = []

    def _start(**options):
        server, stop = start_dribbling_server(**options)
        stops.append(stop)
        return server

    yield _start
    for stop in stops:
        stop()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_server_sending_a_byte_at_a_time_is_cut_off_at_the_timeout(dribbling, phase):
    # 60 slow bytes take the server 30 s; every single read is answered within 0.5 s.
    server = dribbling(phase=phase, size=60, interval=0.5)
    with pytest.raises(DeadlineExceeded) as caught:
        http_post(server.url("/hook"), json={"a": 1}, timeout=1)
    sent = server.sent
    assert isinstance(caught.value, httpx.TimeoutException)
    assert str(caught.value) == "the exchange took longer than 1s"
    assert server.requests == 1
    assert sent < server.size // 2, f"the call went on while the server sent {sent} of {server.size} bytes"


def test_a_slow_answer_that_ends_within_the_timeout_is_read_whole(dribbling):
    server = dribbling(phase="body", size=5, interval=0.05)
    response = http_post(server.url("/hook"), json={}, timeout=60)
    assert response.status_code == 200 and response.content == b"xxxxx"
