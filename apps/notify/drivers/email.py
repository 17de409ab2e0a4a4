"""The email driver: mails the message through Django's mail framework.

Recipients come from ``to`` or NOTIFY_EMAIL_TO (comma-separated); the server
and account from the config or Django's EMAIL_* settings; the password from
the variable named by ``password_env`` or from EMAIL_HOST_PASSWORD, never
from the definition. Each recipient gets a message of their own, so one
refused address fails only its own delivery and nobody sees the others'
addresses. The backend is Django's EMAIL_BACKEND (SMTP unless changed).
A message with a key is mailed with a Message-ID derived from the key, the
recipient and the sender's domain, the same on every repeat, so mail systems
that drop duplicate Message-IDs deliver a repeated notification once.

Only the operator's own server, EMAIL_HOST at EMAIL_PORT, is trusted as
configured. With the SMTP backend, any other host and port a node chooses
(its own ``host``, or EMAIL_HOST with a ``port`` of its own, "localhost" at
any port included) must pass apps.outbound's guard: public addresses only,
unless OUTBOUND_ALLOW_HOSTS allows it; the driver then connects to the
address it checked (drivers/smtp.py), so the SMTP client cannot be pointed
at a service inside the network.
"""
from __future__ import annotations

import hashlib
import os
import smtplib
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends import smtp
from django.core.validators import validate_email
from django.utils.module_loading import import_string

from apps.notify.base import Delivery, DeliveryError, Driver, Message, drivers
from apps.notify.drivers.common import (
    DEFAULT_TIMEOUT,
    label_messages,
    secret,
    timeout_messages,
    truncate,
)
from apps.notify.drivers.smtp import PinnedEmailBackend
from apps.outbound import OutboundBlocked, host_check, same_host
from apps.secrets import MIN_SECRET_LENGTH, REDACTED, WHERE_SECRETS_LIVE, env_name_messages, remember

RECIPIENTS_ENV = "NOTIFY_EMAIL_TO"
PASSWORD_ENV = "EMAIL_HOST_PASSWORD"
SUBJECT_LIMIT = 250


def _is_address(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        validate_email(value.strip())
    except ValidationError:
        return False
    return True


def _is_sender(value: object) -> bool:
    """An address, optionally with a display name: ``Monitoring <mon@example.com>``."""
    return isinstance(value, str) and "\n" not in value and "\r" not in value and _is_address(parseaddr(value)[1])


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _smtp_backend() -> bool:
    """Whether EMAIL_BACKEND is Django's SMTP backend (or built on it): the only kind that connects."""
    try:
        return issubclass(import_string(settings.EMAIL_BACKEND), smtp.EmailBackend)
    except (ImportError, TypeError):
        return False


def env_recipients() -> list[str]:
    """The addresses listed in NOTIFY_EMAIL_TO."""
    return [a.strip() for a in os.environ.get(RECIPIENTS_ENV, "").split(",") if a.strip()]


@drivers.register("email")
class EmailDriver(Driver):
    name = "email"
    options = frozenset(
        {"to", "from_email", "host", "port", "username", "password_env", "use_tls", "use_ssl", "timeout_seconds"}
    )
    secret_keys = ("password",)

    def validate_config(self, config: dict) -> list[str]:
        messages = self.unknown_option_problems(config)
        messages += self.secret_problems(config) + env_name_messages(config, self.secret_keys)
        if "to" in config:
            to = config["to"]
            if not (isinstance(to, list) and to and all(isinstance(a, str) for a in to)):
                messages.append("to must be a non-empty list of email addresses")
            else:
                messages += [f"to has an invalid email address: {a}" for a in to if not _is_address(a)]
        if "from_email" in config and not _is_sender(config["from_email"]):
            messages.append("from_email must be an email address")
        messages += label_messages(config, ("host", "username"))
        if "port" in config and not _is_port(config["port"]):
            messages.append("port must be a whole number from 1 to 65535")
        for key in ("use_tls", "use_ssl"):
            if key in config and not isinstance(config[key], bool):
                messages.append(f"{key} must be true or false")
        if config.get("use_tls") is True and config.get("use_ssl") is True:
            messages.append("use_tls and use_ssl cannot both be true")
        return messages + timeout_messages(config)

    def required_env(self, config: dict) -> list[str]:
        # The password is optional (EMAIL_HOST_PASSWORD may be empty); password_env, when given, is not.
        return super().required_env(config) + ([] if config.get("to") else [RECIPIENTS_ENV])

    def _password(self, config: dict) -> str:
        """The SMTP password ("" for none); raises DeliveryError when password_env names an unset variable."""
        if config.get("password_env"):
            return secret(config, "password", default_env=None, what="SMTP password")
        password = os.environ.get(PASSWORD_ENV, "").strip() or settings.EMAIL_HOST_PASSWORD
        remember(password)
        return password

    def send(self, *, message: Message, config: dict) -> list[Delivery]:
        """Mails ``message`` to each recipient; one Delivery per recipient.

        Raises DeliveryError when there is no recipient, password_env names
        an unset variable, or the node's host and port (when they are not
        EMAIL_HOST at EMAIL_PORT) are refused by apps.outbound (nothing is
        connected to then); a connection, login or
        refusal problem is a failed Delivery whose detail never contains the
        password."""
        recipients = list(config.get("to") or env_recipients())
        if not recipients:
            raise DeliveryError(f"No email recipients: set {RECIPIENTS_ENV} (or the node's to) {WHERE_SECRETS_LIVE}")
        password = self._password(config)
        host = config.get("host") or settings.EMAIL_HOST
        port = config.get("port") or settings.EMAIL_PORT
        timeout = config.get("timeout_seconds") or getattr(settings, "EMAIL_TIMEOUT", None) or DEFAULT_TIMEOUT
        use_tls, use_ssl = config.get("use_tls"), config.get("use_ssl")
        # Choosing one in the config turns off the other, which the settings may have on.
        if use_ssl and use_tls is None:
            use_tls = False
        if use_tls and use_ssl is None:
            use_ssl = False
        options: dict[str, Any] = {
            "fail_silently": False,
            "host": host,
            "port": port,
            "username": config.get("username"),
            "password": password,
            "use_tls": use_tls,
            "use_ssl": use_ssl,
            "timeout": timeout,
        }
        # Only the operator's own pair is trusted: "localhost" at a port of the node's choosing is any local service.
        trusted = same_host(str(host), str(settings.EMAIL_HOST)) and port == settings.EMAIL_PORT
        try:
            if not trusted and _smtp_backend():
                try:
                    addresses = host_check(host, port=port)
                except OutboundBlocked as exc:
                    raise DeliveryError(f"SMTP host refused: {exc}") from None
                connection = PinnedEmailBackend(addresses=addresses, **options)
            else:
                connection = get_connection(**options)
        except ValueError as exc:  # Django refuses EMAIL_USE_TLS together with EMAIL_USE_SSL
            raise DeliveryError(f"Cannot set up the SMTP connection: {exc}") from None

        def failure(exc: Exception) -> str:
            detail = _describe(exc, host=host, port=port, timeout=timeout)
            # No message built here holds the password; this guards against a server echoing it.
            return detail.replace(password, REDACTED) if len(password) >= MIN_SECRET_LENGTH else detail

        deliveries = {r: Delivery(f"email:{r}", False, "invalid email address") for r in recipients}
        valid = [r for r in dict.fromkeys(recipients) if _is_address(r)]
        if valid:
            deliveries.update(self._send_each(connection, message, config, valid, failure))
        return list(deliveries.values())

    def _send_each(self, connection, message: Message, config: dict, recipients: list[str], failure) -> dict:
        """One message per recipient over one connection; recipient -> Delivery."""
        try:
            connection.open()
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            return {r: Delivery(f"email:{r}", False, failure(exc)) for r in recipients}
        deliveries = {}
        try:
            for recipient in recipients:
                try:
                    sent = connection.send_messages([self._mail(message, config, recipient, connection)])
                except (smtplib.SMTPException, OSError, ValueError) as exc:
                    deliveries[recipient] = Delivery(f"email:{recipient}", False, failure(exc))
                else:
                    deliveries[recipient] = Delivery(f"email:{recipient}", bool(sent), "sent" if sent else "not sent")
        finally:
            try:
                connection.close()
            except (smtplib.SMTPException, OSError):
                pass  # every message is already accepted or failed; a failed QUIT changes nothing
        return deliveries

    def _mail(self, message: Message, config: dict, recipient: str, connection) -> EmailMessage:
        run = (message.data or {}).get("run") or {}
        from_email = config.get("from_email") or settings.DEFAULT_FROM_EMAIL
        headers = {"X-Pipeline-Severity": message.severity}
        if message.notice:
            headers["X-Pipeline-Notice"] = message.notice
        if run.get("trace_id"):
            headers["X-Pipeline-Trace"] = str(run["trace_id"])
        message_id = stable_message_id(message.key, recipient, from_email)
        if message_id:
            headers["Message-ID"] = message_id  # Django makes a fresh one only when none is given
        return EmailMessage(
            # A header cannot hold a line break (Django refuses it), and titles come from alert payloads.
            subject=truncate(" ".join(message.title.split()), SUBJECT_LIMIT),
            body=message.body,
            from_email=from_email,
            to=[recipient],
            headers=headers,
            connection=connection,
        )


def stable_message_id(key: str, recipient: str, from_email: str) -> str:
    """``<key.<recipient hash>@<sender's domain>>``: the same for every repeat of
    one notification to one recipient (a worker's own host name would change
    across a takeover, so the sender's domain is used). "" when ``key`` is
    empty or the sender has no usable domain: Django then makes its own."""
    if not key:
        return ""
    domain = parseaddr(from_email)[1].rpartition("@")[2].strip()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    if not domain:
        return ""
    # A hash, not the address: Message-IDs are quoted in replies and forwards.
    recipient_hash = hashlib.sha256(recipient.strip().lower().encode()).hexdigest()[:16]
    return f"<{key}.{recipient_hash}@{domain}>"


def _describe(exc: Exception, *, host: str, port: int, timeout: float) -> str:
    """A one-line account of an SMTP failure, naming the server but no credential."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        reasons = [f"{code} {_text(text)}" for code, text in exc.recipients.values()]
        return "recipient refused" + (f" ({reasons[0]})" if reasons else "")
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__} ({exc.smtp_code} {_text(exc.smtp_error)})"
    # smtplib reports a read timeout as a disconnection caused by the timeout.
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return f"timeout after {timeout}s talking to {host}:{port}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"{host}:{port} closed the connection"
    if isinstance(exc, OSError):
        return f"cannot connect to {host}:{port} ({type(exc).__name__})"
    # Other errors (a header Django refuses...) may quote values: the class alone is shown.
    return f"{type(exc).__name__} talking to {host}:{port}"


def _text(value) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return truncate(" ".join(text.split()), 200)
