"""`memory` check: how much of the physical memory is in use."""
from __future__ import annotations

import psutil

from apps.checkers.base import Checker, CheckResult, checkers
from apps.checkers.checks.common import limits, verdict


@checkers.register("memory")
class MemoryChecker(Checker):
    """Memory usage in percent of physical memory (what the kernel cannot easily reclaim)."""

    name = "memory"
    unit = "%"
    default_thresholds = {"warning": 85.0, "critical": 95.0}

    def run(self, *, thresholds: dict, options: dict) -> CheckResult:
        """Read memory usage now."""
        limit = limits(self, thresholds)
        memory = psutil.virtual_memory()
        value = round(memory.percent, 1)
        status = self.status_for(value, limit)
        return CheckResult(
            name=self.name,
            status=status,
            value=value,
            unit=self.unit,
            message=(
                f"Memory usage {value:.1f}% {verdict(status, limit)}, "
                f"{memory.available / 2**30:.1f} GiB of {memory.total / 2**30:.1f} GiB available"
            ),
            details={
                "total_bytes": memory.total,
                "available_bytes": memory.available,
                "used_bytes": memory.used,
            },
        )
