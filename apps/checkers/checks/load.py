"""`load` check: the run-queue load average against the number of CPUs."""
from __future__ import annotations

import psutil

from apps.checkers.base import Checker, CheckResult, checkers
from apps.checkers.checks.common import limits, verdict


@checkers.register("load")
class LoadChecker(Checker):
    """The 1-minute load average in percent of capacity (100% = one runnable task per CPU)."""

    name = "load"
    unit = "%"
    default_thresholds = {"warning": 100.0, "critical": 200.0}

    def run(self, *, thresholds: dict, options: dict) -> CheckResult:
        """Read the load averages now. Raises OSError where the platform has none."""
        limit = limits(self, thresholds)
        load1, load5, load15 = psutil.getloadavg()
        cpus = psutil.cpu_count(logical=True) or 1
        value = round(load1 / cpus * 100, 1)
        status = self.status_for(value, limit)
        return CheckResult(
            name=self.name,
            status=status,
            value=value,
            unit=self.unit,
            message=(
                f"Load {load1:.2f} on {cpus} CPUs, {value:.1f}% of capacity {verdict(status, limit)}"
            ),
            details={
                "load_1m": round(load1, 2),
                "load_5m": round(load5, 2),
                "load_15m": round(load15, 2),
                "cpu_count": cpus,
            },
        )
