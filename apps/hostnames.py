"""Host names: the hosts workers measure and runs are sent to.

A worker serves the host named by MONITOR_HOST (else the machine's
hostname) through the queue ``host.<name>``. Names are compared in lower
case, as DNS compares them. Kept free of Django imports: settings use it.
"""
from __future__ import annotations

import re

# Letters, digits, '.', '-' and '_' (container and DNS names), starting with a letter or digit.
HOST_NAME = re.compile(r"[a-z0-9][-a-z0-9._]{0,99}")
HOST_NAME_RULE = "letters, digits, '.', '-' and '_', starting with a letter or digit, at most 100"
# Words --host and a definition's host/hosts take that are not host names.
AUTO, ALL = "auto", "all"
QUEUE_PREFIX = "host."


def host_name(value: object) -> str | None:
    """``value`` as a host name (lower case), or None when it is not one
    (AUTO and ALL are not host names)."""
    if not isinstance(value, str):
        return None
    name = value.lower()
    return name if HOST_NAME.fullmatch(name) and name not in (AUTO, ALL) else None


def host_queue(host: str) -> str:
    """The queue of the workers that serve ``host``."""
    return f"{QUEUE_PREFIX}{host}"
