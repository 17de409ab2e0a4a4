"""`disk` check: how full the filesystems holding some paths are."""
from __future__ import annotations

import os

import psutil

from apps.checkers.base import STATUS_RANK, Checker, CheckResult, checkers
from apps.checkers.checks.common import limits, unknown_options, verdict

DEFAULT_PATHS = ["/"]


@checkers.register("disk")
class DiskChecker(Checker):
    """Disk usage in percent of the fullest filesystem among ``paths``."""

    name = "disk"
    unit = "%"
    default_thresholds = {"warning": 85.0, "critical": 95.0}

    def validate_options(self, options: dict) -> list[str]:
        messages = unknown_options(self.name, options, {"paths"})
        if "paths" in options:
            paths = options["paths"]
            if not isinstance(paths, list) or not all(isinstance(p, str) and p.strip() for p in paths):
                messages.append("option paths for check disk must be a list of non-empty strings")
            elif not paths:
                messages.append("option paths for check disk must name at least one path")
        return messages

    def run(self, *, thresholds: dict, options: dict) -> CheckResult:
        """Read the usage of the filesystem of each path.

        Raises ValueError for invalid options or a path that does not exist."""
        problems = self.validate_options(options)
        if problems:
            raise ValueError("; ".join(problems))
        limit = limits(self, thresholds)
        per_path = {}
        # dict.fromkeys: a path listed twice is read and reported once.
        for path in dict.fromkeys(options.get("paths", DEFAULT_PATHS)):
            if not os.path.exists(path):
                raise ValueError(f"Disk path not found: {path}")
            usage = psutil.disk_usage(path)
            percent = round(usage.percent, 1)
            per_path[path] = {
                "percent": percent,
                "status": self.status_for(percent, limit),
                "total_bytes": usage.total,
                "used_bytes": usage.used,
                "free_bytes": usage.free,
            }
        # The fullest path decides; on a tie the first listed wins, so the result is stable.
        path = max(per_path, key=lambda p: (per_path[p]["percent"], STATUS_RANK[per_path[p]["status"]]))
        value = per_path[path]["percent"]
        status = self.status_for(value, limit)
        among = f"; fullest of {len(per_path)} paths" if len(per_path) > 1 else ""
        return CheckResult(
            name=self.name,
            status=status,
            value=value,
            unit=self.unit,
            message=f"Disk usage {value:.1f}% on {path} {verdict(status, limit)}{among}",
            details={"path": path, "paths": per_path},
        )
