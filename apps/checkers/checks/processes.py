"""`processes` check: the processes using the most CPU and memory."""
from __future__ import annotations

import time

import psutil

from apps.checkers.base import Checker, CheckResult, checkers
from apps.checkers.checks.common import interval_problems, limits, verdict

DEFAULT_TOP = 5
MAX_TOP = 50
DEFAULT_INTERVAL = 0.5
MAX_INTERVAL = 10.0


@checkers.register("processes")
class ProcessesChecker(Checker):
    """The largest single process's memory use in percent of physical memory,
    with the ``top`` processes by CPU and by memory (CPU sampled over ``interval``
    seconds, in percent of one CPU, so a busy multi-threaded process can exceed 100)."""

    name = "processes"
    options = frozenset({"top", "interval"})
    unit = "%"
    default_thresholds = {"warning": 50.0, "critical": 80.0}

    def validate_options(self, options: dict) -> list[str]:
        messages = super().validate_options(options)
        if "top" in options:
            top = options["top"]
            if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
                messages.append(
                    f"option top for check processes must be a whole number from 1 to {MAX_TOP} "
                    f"(got {top!r})"
                )
        return messages + interval_problems(self.name, options, MAX_INTERVAL)

    def run(self, *, thresholds: dict, options: dict) -> CheckResult:
        """Sample every process's CPU use for ``interval`` seconds (blocks that
        long) and read its memory use. Processes that exit meanwhile are left
        out; those this user may not read are counted in ``inaccessible``.

        Raises ValueError for invalid options."""
        problems = self.validate_options(options)
        if problems:
            raise ValueError("; ".join(problems))
        limit = limits(self, thresholds)
        top = options.get("top", DEFAULT_TOP)
        interval = float(options.get("interval", DEFAULT_INTERVAL))
        rows, inaccessible = _sample(interval)
        by_cpu = sorted(rows, key=lambda r: (-r["cpu_percent"], -r["memory_percent"], r["pid"]))[:top]
        by_memory = sorted(rows, key=lambda r: (-r["memory_percent"], -r["cpu_percent"], r["pid"]))[:top]
        value = by_memory[0]["memory_percent"] if by_memory else 0.0
        status = self.status_for(value, limit)
        if by_memory:
            largest, busiest = by_memory[0], by_cpu[0]
            message = (
                f"Largest process memory {value:.1f}% {verdict(status, limit)}: "
                f"{largest['name']} (pid {largest['pid']}); busiest: {busiest['name']} "
                f"(pid {busiest['pid']}) at {busiest['cpu_percent']:.1f}% CPU"
            )
        else:
            message = f"Largest process memory {value:.1f}% {verdict(status, limit)}: no process could be read"
        return CheckResult(
            name=self.name,
            status=status,
            value=value,
            unit=self.unit,
            message=message,
            details={
                "top_cpu": by_cpu,
                "top_memory": by_memory,
                "process_count": len(rows),
                "inaccessible": inaccessible,
                "interval_seconds": interval,
                "cpu_count": psutil.cpu_count(logical=True),
            },
        )


def _sample(interval: float) -> tuple[list[dict], int]:
    """Name, pid, CPU and memory percent of every readable process, and how many
    processes could not be read."""
    denied = 0
    processes = []
    for process in psutil.process_iter(["name"]):
        try:
            process.cpu_percent(None)  # the first call starts the measurement
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            denied += 1
            continue
        processes.append(process)
    time.sleep(interval)
    rows = []
    for process in processes:
        try:
            with process.oneshot():
                cpu = process.cpu_percent(None)
                memory = process.memory_percent()
        except psutil.NoSuchProcess:  # exited (or a zombie) while we were sampling
            continue
        except psutil.AccessDenied:
            denied += 1
            continue
        rows.append(
            {
                "name": process.info.get("name") or f"pid {process.pid}",
                "pid": process.pid,
                "cpu_percent": round(cpu, 1),
                "memory_percent": round(memory, 1),
            }
        )
    return rows, denied
