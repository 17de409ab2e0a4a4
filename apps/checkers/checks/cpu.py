"""`cpu` check: how busy the processors are, sampled over a short interval."""
from __future__ import annotations

import psutil

from apps.checkers.base import Checker, CheckResult, checkers
from apps.checkers.checks.common import interval_problems, limits, verdict

DEFAULT_INTERVAL = 0.2
MAX_INTERVAL = 60.0  # a minute's average is a common reading; the node's time limit (60 s by default) still bounds it


@checkers.register("cpu")
class CpuChecker(Checker):
    """CPU usage in percent across all processors."""

    name = "cpu"
    options = frozenset({"interval"})
    unit = "%"
    default_thresholds = {"warning": 80.0, "critical": 95.0}

    def validate_options(self, options: dict) -> list[str]:
        return super().validate_options(options) + interval_problems(
            self.name, options, MAX_INTERVAL
        )

    def run(self, *, thresholds: dict, options: dict) -> CheckResult:
        """Sample CPU usage for ``interval`` seconds (blocks that long).

        Raises ValueError for an invalid interval."""
        problems = self.validate_options(options)
        if problems:
            raise ValueError("; ".join(problems))
        interval = float(options.get("interval", DEFAULT_INTERVAL))
        limit = limits(self, thresholds)
        value = round(psutil.cpu_percent(interval=interval), 1)
        status = self.status_for(value, limit)
        details = {
            "cpu_count": psutil.cpu_count(logical=True),
            "physical_cpu_count": psutil.cpu_count(logical=False),
            "interval_seconds": interval,
        }
        try:
            # Load is a free read next to the sample and tells saturation from a short spike.
            details["load_1m"], details["load_5m"], details["load_15m"] = (
                round(load, 2) for load in psutil.getloadavg()
            )
        except (OSError, AttributeError):
            pass
        return CheckResult(
            name=self.name,
            status=status,
            value=value,
            unit=self.unit,
            message=f"CPU usage {value:.1f}% {verdict(status, limit)}",
            details=details,
        )
