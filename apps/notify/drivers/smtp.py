"""Django's SMTP backend, connecting only to addresses apps.outbound checked.

The email driver uses it when a node names its own ``host``: the host is
resolved once and checked (apps.outbound.host_check), and the TCP connection
goes to one of those addresses, never to a fresh lookup of the name. smtplib
keeps the host name, so STARTTLS and SMTPS still check the certificate
against it.
"""
from __future__ import annotations

import smtplib
from functools import partial

from django.core.mail.backends import smtp

from apps.outbound import tcp_connect


class _PinnedSocket(smtplib.SMTP):
    """Opens its socket to ``pinned_addresses`` instead of resolving the host name."""

    pinned_addresses: tuple[str, ...] = ()

    def _get_socket(self, host, port, timeout):
        return tcp_connect(list(self.pinned_addresses), port, timeout, source_address=self.source_address)


class PinnedSMTP(_PinnedSocket):
    def __init__(self, host: str, port: int, *, addresses: tuple[str, ...], **kwargs):
        self.pinned_addresses = tuple(addresses)
        super().__init__(host, port, **kwargs)


class PinnedSMTP_SSL(smtplib.SMTP_SSL, _PinnedSocket):
    # SMTP_SSL wraps the socket _PinnedSocket opens, with the host name for the certificate check.
    def __init__(self, host: str, port: int, *, addresses: tuple[str, ...], **kwargs):
        self.pinned_addresses = tuple(addresses)
        super().__init__(host, port, **kwargs)


class PinnedEmailBackend(smtp.EmailBackend):
    """Django's SMTP EmailBackend whose connections go to ``addresses`` (checked
    ones) while host-name checks in TLS use ``host``."""

    def __init__(self, *, addresses: list[str], **kwargs):
        self.addresses = tuple(addresses)
        super().__init__(**kwargs)

    @property
    def connection_class(self):
        return partial(PinnedSMTP_SSL if self.use_ssl else PinnedSMTP, addresses=self.addresses)
