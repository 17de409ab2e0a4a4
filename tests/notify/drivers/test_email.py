"""The email driver through Django's SMTP backend against a real SMTP server (aiosmtpd)."""
from __future__ import annotations

import email
import hashlib
import socket
import ssl
from contextlib import contextmanager
from email.policy import default as default_policy

import pytest
from django.core import mail

from apps.notify.base import DeliveryError, drivers
from apps.notify.services import notification_send, notification_validate
from tests.notify.support import BODY, RESOLVED_LINE, SmtpServer, assert_not_in, make_message, make_notice

PASSWORD = "hunter2-smtp-s3cr3t"


def parsed(received: dict):
    return email.message_from_bytes(received["content"], policy=default_policy)


def test_email_sends_one_message_per_recipient(smtp_server, message):
    result = notification_send(
        driver="email", config={"to": ["alice@example.com", "bob@example.com"]}, message=message
    )
    assert result == {
        "driver": "email",
        "channels_attempted": 2,
        "succeeded": 2,
        "failed": 0,
        "deliveries": [
            {"channel": "email:alice@example.com", "ok": True, "detail": "sent"},
            {"channel": "email:bob@example.com", "ok": True, "detail": "sent"},
        ],
    }
    assert [(m["mail_from"], m["rcpt_tos"]) for m in smtp_server.messages] == [
        ("pipelines@example.com", ["alice@example.com"]),
        ("pipelines@example.com", ["bob@example.com"]),
    ]
    first = parsed(smtp_server.messages[0])
    assert first["Subject"] == "[CRITICAL] High CPU on web-01"
    assert first["To"] == "alice@example.com"
    assert first["From"] == "pipelines@example.com"
    assert first["X-Pipeline-Severity"] == "critical"
    assert first["X-Pipeline-Trace"] == "abc-123"
    assert first.get_content().replace("\r\n", "\n").rstrip("\n") == BODY


def recipient_hash(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()[:16]


def test_email_message_id_is_the_same_on_every_repeat_and_differs_per_recipient(smtp_server):
    config = {"to": ["alice@example.com", "bob@example.com"]}
    for key in ("42-notify", "42-notify", "42-page"):
        assert notification_send(driver="email", config=config, message=make_message(key=key))["succeeded"] == 2
    ids = [parsed(m)["Message-ID"] for m in smtp_server.messages]
    alice, bob = recipient_hash("alice@example.com"), recipient_hash("bob@example.com")
    assert ids == [
        f"<42-notify.{alice}@example.com>",
        f"<42-notify.{bob}@example.com>",
        f"<42-notify.{alice}@example.com>",
        f"<42-notify.{bob}@example.com>",
        f"<42-page.{alice}@example.com>",
        f"<42-page.{bob}@example.com>",
    ]


def test_email_message_id_takes_the_domain_of_the_configured_sender(smtp_server):
    config = {"to": ["alice@example.com"], "from_email": "Monitor <mon@bücher.example>"}
    assert notification_send(driver="email", config=config, message=make_message(key="42-notify"))["succeeded"] == 1
    message_id = parsed(smtp_server.messages[0])["Message-ID"]
    assert message_id == f"<42-notify.{recipient_hash('alice@example.com')}@xn--bcher-kva.example>"


def test_email_without_a_key_gets_djangos_own_message_id(smtp_server, message):
    for _ in range(2):
        notification_send(driver="email", config={"to": ["alice@example.com"]}, message=message)
    first, second = (parsed(m)["Message-ID"] for m in smtp_server.messages)
    assert first != second


def test_email_recipients_default_to_notify_email_to(smtp_server, monkeypatch, message):
    monkeypatch.setenv("NOTIFY_EMAIL_TO", " oncall@example.com, sre@example.com ,")
    result = notification_send(driver="email", config={"from_email": "Monitor <mon@example.com>"}, message=message)
    assert result["succeeded"] == 2
    assert [m["rcpt_tos"] for m in smtp_server.messages] == [["oncall@example.com"], ["sre@example.com"]]
    assert smtp_server.messages[0]["mail_from"] == "mon@example.com"
    assert parsed(smtp_server.messages[0])["From"] == "Monitor <mon@example.com>"


def test_email_server_from_config_overrides_the_settings(smtp_server, settings, closed_port, message):
    settings.EMAIL_PORT = closed_port
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]  # not the operator's pair: the node's own server is checked
    config = {"to": ["alice@example.com"], "host": "127.0.0.1", "port": smtp_server.port}
    assert notification_send(driver="email", config=config, message=message)["succeeded"] == 1
    assert len(smtp_server.messages) == 1


def test_email_logs_in_with_the_password_from_the_named_variable(smtp_server, monkeypatch, message):
    monkeypatch.setenv("OPS_SMTP_PASSWORD", PASSWORD)
    config = {"to": ["alice@example.com"], "username": "mailer", "password_env": "OPS_SMTP_PASSWORD"}
    result = notification_send(driver="email", config=config, message=message)
    assert result["succeeded"] == 1
    assert smtp_server.logins == [("mailer", PASSWORD)]
    assert_not_in(result, PASSWORD)


def test_email_password_defaults_to_email_host_password(smtp_server, settings, monkeypatch, message):
    monkeypatch.setenv("EMAIL_HOST_PASSWORD", PASSWORD)
    settings.EMAIL_HOST_USER = "mailer"
    result = notification_send(driver="email", config={"to": ["alice@example.com"]}, message=message)
    assert result["succeeded"] == 1
    assert smtp_server.logins == [("mailer", PASSWORD)]


def test_email_login_refused_fails_every_recipient_without_the_password(smtp_server, monkeypatch, message):
    smtp_server.password = "the-right-one"
    monkeypatch.setenv("OPS_SMTP_PASSWORD", PASSWORD)
    config = {"to": ["alice@example.com", "bob@example.com"], "username": "mailer", "password_env": "OPS_SMTP_PASSWORD"}
    result = notification_send(driver="email", config=config, message=message)
    assert (result["succeeded"], result["failed"]) == (0, 2)
    detail = result["deliveries"][0]["detail"]
    assert detail.startswith("SMTPAuthenticationError (535 ")
    assert smtp_server.messages == []
    assert_not_in(result, PASSWORD)


def test_email_refused_recipient_fails_only_its_own_delivery(smtp_server, message):
    config = {"to": ["nobody@refused.example", "alice@example.com"]}
    result = notification_send(driver="email", config=config, message=message)
    assert result["deliveries"] == [
        {
            "channel": "email:nobody@refused.example",
            "ok": False,
            "detail": "recipient refused (550 5.1.1 Mailbox unavailable)",
        },
        {"channel": "email:alice@example.com", "ok": True, "detail": "sent"},
    ]
    assert [m["rcpt_tos"] for m in smtp_server.messages] == [["alice@example.com"]]


def test_email_invalid_address_from_the_environment_fails_only_itself(smtp_server, monkeypatch, message):
    monkeypatch.setenv("NOTIFY_EMAIL_TO", "not-an-address,alice@example.com")
    result = notification_send(driver="email", config={}, message=message)
    assert result["deliveries"] == [
        {"channel": "email:not-an-address", "ok": False, "detail": "invalid email address"},
        {"channel": "email:alice@example.com", "ok": True, "detail": "sent"},
    ]


def test_email_server_down_is_a_failed_delivery_naming_the_server(settings, closed_port, message):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    config = {"to": ["alice@example.com"], "host": "127.0.0.1", "port": closed_port}
    result = notification_send(driver="email", config=config, message=message)
    assert result["deliveries"] == [
        {
            "channel": "email:alice@example.com",
            "ok": False,
            "detail": f"cannot connect to 127.0.0.1:{closed_port} (ConnectionRefusedError)",
        }
    ]


def test_email_slow_server_times_out(smtp_server, message):
    smtp_server.delay = 2
    config = {"to": ["alice@example.com"], "timeout_seconds": 0.3}
    result = notification_send(driver="email", config=config, message=message)
    assert result["deliveries"][0]["ok"] is False
    assert result["deliveries"][0]["detail"] == f"timeout after 0.3s talking to 127.0.0.1:{smtp_server.port}"


def test_email_title_with_line_breaks_becomes_a_one_line_subject(smtp_server):
    message = make_message(title="[CRITICAL] Disk full\r\non db-01")
    assert notification_send(driver="email", config={"to": ["a@example.com"]}, message=message)["succeeded"] == 1
    assert parsed(smtp_server.messages[0])["Subject"] == "[CRITICAL] Disk full on db-01"


def test_email_uses_djangos_configured_backend(settings, message):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    result = notification_send(driver="email", config={"to": ["alice@example.com"]}, message=message)
    assert result["succeeded"] == 1
    [sent] = mail.outbox
    assert (sent.subject, sent.to, sent.body) == ("[CRITICAL] High CPU on web-01", ["alice@example.com"], BODY)


def test_email_without_recipients_raises_delivery_error(message):
    with pytest.raises(DeliveryError, match=r"^No email recipients: set NOTIFY_EMAIL_TO \(or the node's to\) in the environment of the workers$"):
        drivers.get("email")().send(message=message, config={})


def test_email_password_variable_unset_is_a_failed_delivery(smtp_server, message):
    config = {"to": ["alice@example.com"], "username": "mailer", "password_env": "OPS_SMTP_PASSWORD"}
    result = notification_send(driver="email", config=config, message=message)
    assert result["deliveries"] == [
        {"channel": "email", "ok": False, "detail": "No SMTP password: set OPS_SMTP_PASSWORD (named by the node's password_env) in the environment of the workers"}
    ]
    assert smtp_server.messages == []


def test_email_valid_config_has_no_messages():
    assert notification_validate(config={"driver": "email"}) == []
    config = {
        "driver": "email",
        "to": ["alice@example.com"],
        "from_email": "Monitor <mon@example.com>",
        "host": "smtp.example.com",
        "port": 587,
        "username": "mailer",
        "password_env": "OPS_SMTP_PASSWORD",
        "use_tls": True,
        "timeout_seconds": 5,
    }
    assert notification_validate(config=config) == []


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            {"password": PASSWORD},
            "password is a secret and must not be written in the definition: "
            "put it in an environment variable and name it with password_env",
        ),
        ({"to": "alice@example.com"}, "to must be a non-empty list of email addresses"),
        ({"to": []}, "to must be a non-empty list of email addresses"),
        ({"to": ["alice@example.com", "bob"]}, "to has an invalid email address: bob"),
        ({"from_email": "nobody"}, "from_email must be an email address"),
        ({"port": "25"}, "port must be a whole number from 1 to 65535"),
        ({"port": 70000}, "port must be a whole number from 1 to 65535"),
        ({"use_tls": "yes"}, "use_tls must be true or false"),
        ({"use_tls": True, "use_ssl": True}, "use_tls and use_ssl cannot both be true"),
        ({"host": ""}, "host must be a non-empty single-line string"),
        ({"cc": ["a@example.com"]}, "unknown option for driver email: cc"),
    ],
)
def test_email_bad_config_is_reported(config, expected):
    assert notification_validate(config={"driver": "email", **config}) == [expected]


def test_email_ssl_in_config_turns_off_tls_from_the_settings(settings, closed_port, message):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    settings.EMAIL_USE_TLS = True
    config = {"to": ["alice@example.com"], "host": "127.0.0.1", "port": closed_port, "use_ssl": True}
    result = notification_send(driver="email", config=config, message=message)
    # It got as far as connecting: the two settings did not clash.
    assert result["deliveries"][0]["detail"] == f"cannot connect to 127.0.0.1:{closed_port} (ConnectionRefusedError)"


# --- the node's own host goes through the outbound guard ------------------------


@contextmanager
def listener(host: str = "127.0.0.1", port: int = 0):
    """A TCP socket listening on ``host``:``port``; ``connected()`` on it says whether anyone connected."""
    sock = socket.socket()
    try:
        sock.bind((host, port))
        sock.listen()
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


def connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@contextmanager
def smtp_on(host: str, port: int = 0, **smtp_options):
    """A real SMTP server (aiosmtpd) on ``host``:``port`` (a free one for 0)."""
    from aiosmtpd.controller import Controller

    if not port:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    state = SmtpServer(port=port)
    controller = Controller(state, hostname=host, port=port, **smtp_options)
    controller.start()
    try:
        yield state
    finally:
        controller.stop()


@pytest.fixture
def smtp_backend(settings):
    """Django's SMTP backend, with an operator's EMAIL_HOST no test connects to."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "smtp.operator.example", 25
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DEFAULT_FROM_EMAIL = "pipelines@example.com"
    settings.OUTBOUND_ALLOW_HOSTS = []
    return settings


def test_email_node_host_on_loopback_is_refused_without_connecting(smtp_backend, fixed_dns, message):
    with listener() as sock:
        config = {"to": ["alice@example.com"], "host": "127.0.0.1", "port": sock.getsockname()[1]}
        result = notification_send(driver="email", config=config, message=message)
        assert result["deliveries"] == [
            {
                "channel": "email",
                "ok": False,
                "detail": "SMTP host refused: address 127.0.0.1 is not a public address; "
                "allow it with OUTBOUND_ALLOW_HOSTS",
            }
        ]
        assert not connected(sock)
    assert fixed_dns.calls == []


def test_email_node_host_resolving_to_a_private_address_is_refused(smtp_backend, fixed_dns, message):
    fixed_dns.add("mail.attacker.example", ["10.0.0.25"])
    config = {"to": ["alice@example.com"], "host": "mail.attacker.example", "port": 6379}
    result = notification_send(driver="email", config=config, message=message)
    assert result["deliveries"][0]["detail"] == (
        "SMTP host refused: host mail.attacker.example resolves to a non-public address (10.0.0.25); "
        "allow it with OUTBOUND_ALLOW_HOSTS"
    )


def test_email_node_host_allowed_connects_to_the_checked_address_only(smtp_backend, fixed_dns, message):
    smtp_backend.OUTBOUND_ALLOW_HOSTS = ["127.0.0.2/32"]
    with smtp_on("127.0.0.2") as server, listener("127.0.0.1", server.port) as loopback:
        # The name answers the checked address first, then the loopback one.
        fixed_dns.add("mail.example", ["127.0.0.2"], ["127.0.0.1"])
        config = {"to": ["alice@example.com"], "host": "mail.example", "port": server.port}
        result = notification_send(driver="email", config=config, message=message)
        assert result["succeeded"] == 1, result
        assert [m["rcpt_tos"] for m in server.messages] == [["alice@example.com"]]
        assert fixed_dns.calls == ["mail.example"]
        assert not connected(loopback)


def test_email_starttls_to_the_pinned_address_checks_the_host_name(
    smtp_backend, fixed_dns, tls_certificate, monkeypatch, message
):
    cert, key = tls_certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    smtp_backend.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # Django's default SSL context trusts it then
    with smtp_on("127.0.0.1", tls_context=context, require_starttls=True) as server:
        fixed_dns.add("tls.example", ["127.0.0.1"])
        fixed_dns.add("other.example", ["127.0.0.1"])
        base = {"to": ["alice@example.com"], "port": server.port, "use_tls": True}
        assert notification_send(driver="email", config={**base, "host": "tls.example"}, message=message)[
            "succeeded"
        ] == 1
        other = notification_send(driver="email", config={**base, "host": "other.example"}, message=message)
        assert other["deliveries"][0]["detail"] == (
            f"cannot connect to other.example:{server.port} (SSLCertVerificationError)"
        )
        assert len(server.messages) == 1


def test_email_node_host_equal_to_email_host_is_trusted(smtp_server, settings, fixed_dns, message):
    settings.OUTBOUND_ALLOW_HOSTS = []
    config = {"to": ["alice@example.com"], "host": "127.0.0.1", "port": smtp_server.port}
    assert notification_send(driver="email", config=config, message=message)["succeeded"] == 1
    assert fixed_dns.calls == []


@pytest.mark.parametrize("own", [{"host": "localhost"}, {"host": "LOCALHOST."}, {}], ids=["localhost", "localhost-fqdn", "no-host"])
def test_email_node_port_of_its_own_on_the_operators_host_is_refused_without_connecting(
    smtp_backend, fixed_dns, message, own
):
    # The operator's relay is "localhost" at 25: a node must not reach any other local port through it.
    smtp_backend.EMAIL_HOST, smtp_backend.EMAIL_PORT = "localhost", 25
    fixed_dns.add("localhost", ["127.0.0.1"])
    with listener() as sock:
        config = {"to": ["alice@example.com"], "port": sock.getsockname()[1], **own}
        result = notification_send(driver="email", config=config, message=message)
        assert result["deliveries"] == [
            {
                "channel": "email",
                "ok": False,
                "detail": "SMTP host refused: host localhost resolves to a non-public address (127.0.0.1); "
                "allow it with OUTBOUND_ALLOW_HOSTS",
            }
        ]
        assert not connected(sock)
    assert fixed_dns.calls == ["localhost"]


def test_email_node_host_localhost_at_the_operators_port_is_checked_when_the_relay_is_elsewhere(
    smtp_backend, fixed_dns, message
):
    fixed_dns.add("localhost", ["127.0.0.1"])
    config = {"to": ["alice@example.com"], "host": "localhost", "port": 25}
    result = notification_send(driver="email", config=config, message=message)
    assert result["deliveries"][0]["detail"].startswith("SMTP host refused: host localhost resolves to a non-public")


def test_email_operators_own_pair_named_by_the_node_is_trusted(smtp_server, settings, fixed_dns, message):
    settings.OUTBOUND_ALLOW_HOSTS = []
    for config in ({"port": smtp_server.port}, {"host": "127.0.0.1", "port": smtp_server.port}, {"host": "127.0.0.1"}):
        result = notification_send(driver="email", config={"to": ["alice@example.com"], **config}, message=message)
        assert result["succeeded"] == 1, (config, result)
    assert len(smtp_server.messages) == 3
    assert fixed_dns.calls == []


def test_email_node_port_of_its_own_allowed_by_outbound_allow_hosts_is_delivered(smtp_server, settings, fixed_dns, message):
    # The node's port differs from EMAIL_PORT: checked, and allowed by the operator's list.
    settings.EMAIL_PORT = 25
    settings.OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    result = notification_send(driver="email", config={"to": ["alice@example.com"], "port": smtp_server.port}, message=message)
    assert result["succeeded"] == 1, result
    assert [m["rcpt_tos"] for m in smtp_server.messages] == [["alice@example.com"]]


def test_email_guard_applies_only_to_the_smtp_backend(settings, message):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.OUTBOUND_ALLOW_HOSTS = []
    mail.outbox = []
    config = {"to": ["alice@example.com"], "host": "127.0.0.1", "port": 25}
    assert notification_send(driver="email", config=config, message=message)["succeeded"] == 1
    assert len(mail.outbox) == 1


def test_email_error_quoting_a_value_is_shown_by_its_class_only(smtp_server):
    message = make_message()
    message.data["run"]["trace_id"] = "abc\nX-Leak: s3cr3t-value"
    result = notification_send(driver="email", config={"to": ["alice@example.com"]}, message=message)
    assert result["deliveries"][0]["detail"] == f"BadHeaderError talking to 127.0.0.1:{smtp_server.port}"
    assert_not_in(result, "s3cr3t")


# --- notices ------------------------------------------------------------------


def test_email_resolved_notice_says_resolved_in_subject_and_text(smtp_server):
    message = make_notice("resolved", key="42-notify")
    assert notification_send(driver="email", config={"to": ["alice@example.com"]}, message=message)["succeeded"] == 1
    mail = parsed(smtp_server.messages[0])
    assert mail["Subject"] == "[RESOLVED] health-check on web-07"
    assert mail["X-Pipeline-Notice"] == "resolved"
    assert mail["X-Pipeline-Severity"] == "ok"
    assert mail.get_content().replace("\r\n", "\n").startswith(RESOLVED_LINE + "\n")
    # The notice changes nothing about the key: the same Message-ID as any message with it.
    assert mail["Message-ID"] == f"<42-notify.{recipient_hash('alice@example.com')}@example.com>"


def test_email_plain_notification_has_no_notice_header(smtp_server, message):
    notification_send(driver="email", config={"to": ["alice@example.com"]}, message=message)
    assert "X-Pipeline-Notice" not in parsed(smtp_server.messages[0])
