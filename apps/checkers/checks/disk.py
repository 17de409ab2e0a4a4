"""`disk` check: how full the filesystems are, every mounted one or those holding some paths."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import psutil

from apps.checkers.base import STATUS_RANK, Checker, CheckResult, checkers
from apps.checkers.checks.common import limits, string_list_problems, verdict

if TYPE_CHECKING:
    from psutil._ntuples import sdiskpart  # what psutil.disk_partitions lists

# Where no physical filesystem is found (a container sees only its overlay root).
FALLBACK_PATHS = ["/"]
# Read-only images are always 100% full and kernel or memory filesystems hold no
# disk space, so neither can tell anyone a disk is filling up.
SKIPPED_FSTYPES = {
    "squashfs", "iso9660", "udf", "erofs", "cramfs",
    "tmpfs", "devtmpfs", "devfs", "ramfs", "overlay", "aufs", "nullfs",
    "proc", "sysfs", "autofs", "cgroup", "cgroup2", "fuse.lxcfs", "fuse.snapfuse",
}
SNAP_MOUNTS = "/snap/"


def physical_filesystems(partitions: list[sdiskpart]) -> list[sdiskpart]:
    """The mounted partitions (``psutil.disk_partitions`` entries) worth checking
    for space, sorted by mount point: no pseudo, memory or read-only image
    filesystems, no snap or file bind mounts, and one mount per device (the
    shortest mount point) since bind mounts of a device share its space."""
    chosen: dict[str, sdiskpart] = {}
    for part in partitions:
        if part.fstype.lower() in SKIPPED_FSTYPES or part.mountpoint.startswith(SNAP_MOUNTS):
            continue
        # Containers bind-mount single files (/etc/hosts) from the host's disk.
        if not os.path.isdir(part.mountpoint):
            continue
        key = part.device or part.mountpoint
        if key not in chosen or len(part.mountpoint) < len(chosen[key].mountpoint):
            chosen[key] = part
    return sorted(chosen.values(), key=lambda part: part.mountpoint)


@checkers.register("disk")
class DiskChecker(Checker):
    """Disk usage in percent of the fullest filesystem: among every mounted
    physical filesystem, or among those holding ``paths``."""

    name = "disk"
    options = frozenset({"paths"})
    unit = "%"
    default_thresholds = {"warning": 85.0, "critical": 95.0}

    def validate_options(self, options: dict) -> list[str]:
        return super().validate_options(options) + string_list_problems(
            self.name, "paths", options, "path"
        )

    def run(self, *, thresholds: dict, options: dict) -> CheckResult:
        """Read the usage of each filesystem to check.

        Raises ValueError for invalid options or a path that does not exist, and
        OSError when a given path cannot be read (a mount found on its own that
        cannot be read is listed under ``unreadable`` instead)."""
        problems = self.validate_options(options)
        if problems:
            raise ValueError("; ".join(problems))
        limit = limits(self, thresholds)
        per_path: dict[str, dict] = {}
        unreadable: list[str] = []
        if "paths" in options:
            # dict.fromkeys: a path listed twice is read and reported once.
            for path in dict.fromkeys(options["paths"]):
                if not os.path.exists(path):
                    raise ValueError(f"Disk path not found: {path}")
                per_path[path] = self._usage(path, limit)
            among = "paths"
        else:
            for part in physical_filesystems(psutil.disk_partitions(all=False)):
                try:
                    usage = self._usage(part.mountpoint, limit)
                except OSError:
                    unreadable.append(part.mountpoint)
                    continue
                per_path[part.mountpoint] = {**usage, "device": part.device, "fstype": part.fstype}
            if not per_path:
                per_path = {path: self._usage(path, limit) for path in FALLBACK_PATHS}
            among = "filesystems"
        # The fullest path decides; on a tie the first listed wins, so the result is stable.
        path = max(per_path, key=lambda p: (per_path[p]["percent"], STATUS_RANK[per_path[p]["status"]]))
        value = per_path[path]["percent"]
        status = self.status_for(value, limit)
        suffix = f"; fullest of {len(per_path)} {among}" if len(per_path) > 1 else ""
        details = {"path": path, "paths": per_path}
        if unreadable:
            details["unreadable"] = unreadable
        return CheckResult(
            name=self.name,
            status=status,
            value=value,
            unit=self.unit,
            message=f"Disk usage {value:.1f}% on {path} {verdict(status, limit)}{suffix}",
            details=details,
        )

    def _usage(self, path: str, limit: dict) -> dict:
        usage = psutil.disk_usage(path)
        percent = round(usage.percent, 1)
        return {
            "percent": percent,
            "status": self.status_for(percent, limit),
            "total_bytes": usage.total,
            "used_bytes": usage.used,
            "free_bytes": usage.free,
        }
