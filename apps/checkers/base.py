"""The checker family: one system check per plug-in, read through psutil."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from apps.options import unknown_option_messages
from apps.registry import Registry

OK, WARNING, CRITICAL = "ok", "warning", "critical"
STATUS_RANK = {OK: 0, WARNING: 1, CRITICAL: 2}


@dataclass
class CheckResult:
    """What one check measured: a value, its status against thresholds, and why."""

    name: str
    status: str
    value: float
    unit: str
    message: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Checker:
    """Base class of a check. Subclasses set ``name`` and ``default_thresholds``
    and implement ``run``; ``validate_options`` reports problems with the
    check's own options as messages."""

    name: str = ""
    unit: str = "%"
    default_thresholds: dict = {"warning": 80.0, "critical": 95.0}
    options: frozenset[str] = frozenset()  # the options the check takes

    def validate_options(self, options: dict) -> list[str]:
        return unknown_option_messages(options, self.options, f"check {self.name}")

    def run(self, *, thresholds: dict, options: dict) -> CheckResult:
        raise NotImplementedError

    @staticmethod
    def status_for(value: float, thresholds: dict) -> str:
        """ok / warning / critical for ``value`` against warning/critical limits."""
        if value >= thresholds["critical"]:
            return CRITICAL
        if value >= thresholds["warning"]:
            return WARNING
        return OK


checkers: Registry[type[Checker]] = Registry("check")
