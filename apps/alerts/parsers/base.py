"""The alert-parser family: one parser per alert source."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from apps.registry import Registry


class PayloadError(ValueError):
    """Raised when a payload cannot be read as alerts by the chosen parser."""


@dataclass
class ParsedAlert:
    """One alert read from a payload, before it is stored."""

    fingerprint: str
    name: str
    severity: str
    status: str  # "firing" or "resolved"
    host: str = ""
    description: str = ""
    labels: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def fingerprint_for(source: str, name: str, labels: dict) -> str:
    """A stable fingerprint from the source, alert name and labels."""
    raw = json.dumps([source, name, labels], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class Parser:
    """Base class of an alert parser. ``detect`` says whether a payload looks
    like this source's; ``parse`` returns the alerts or raises PayloadError;
    ``sample`` returns a realistic example payload for ``--sample``; ``group_key``
names the payload's group of alerts where the source says it."""

    name: str = ""

    def detect(self, payload: dict) -> bool:
        raise NotImplementedError

    def parse(self, payload: dict) -> list[ParsedAlert]:
        raise NotImplementedError

    def sample(self) -> dict:
        raise NotImplementedError

    def group_key(self, payload: dict) -> str:
        """The source's own identity of the group of alerts a payload notifies
        about (Alertmanager's ``groupKey``), or "" when the source has none."""
        return ""


parsers: Registry[type[Parser]] = Registry("alert source")
