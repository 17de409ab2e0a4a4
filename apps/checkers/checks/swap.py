"""`swap` check: how much of the swap space is in use."""
from __future__ import annotations

import psutil

from apps.checkers.base import OK, Checker, CheckResult, checkers
from apps.checkers.checks.common import limits, verdict


@checkers.register("swap")
class SwapChecker(Checker):
    """Swap usage in percent of the swap space; a host without swap is ok at 0%."""

    name = "swap"
    unit = "%"
    # Some swap in use is normal; half of it in use means memory has been short for a while.
    default_thresholds = {"warning": 50.0, "critical": 80.0}

    def run(self, *, thresholds: dict, options: dict) -> CheckResult:
        """Read swap usage now."""
        limit = limits(self, thresholds)
        swap = psutil.swap_memory()
        details = {
            "total_bytes": swap.total,
            "used_bytes": swap.used,
            "free_bytes": swap.free,
            # Cumulative since boot; a growing swapped-out count means memory pressure now.
            "swapped_in_bytes": swap.sin,
            "swapped_out_bytes": swap.sout,
        }
        if not swap.total:
            # Nothing can fill up, whatever the thresholds say.
            return CheckResult(
                name=self.name,
                status=OK,
                value=0.0,
                unit=self.unit,
                message="Swap usage 0.0%: no swap is configured on this host (ok)",
                details=details,
            )
        value = round(swap.percent, 1)
        status = self.status_for(value, limit)
        return CheckResult(
            name=self.name,
            status=status,
            value=value,
            unit=self.unit,
            message=(
                f"Swap usage {value:.1f}% {verdict(status, limit)}, "
                f"{swap.used / 2**30:.1f} GiB of {swap.total / 2**30:.1f} GiB used"
            ),
            details=details,
        )
