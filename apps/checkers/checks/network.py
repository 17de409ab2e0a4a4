"""`network` check: network interfaces that are down or losing packets."""
from __future__ import annotations

import os

import psutil

from apps.checkers.base import Checker, CheckResult, checkers
from apps.checkers.checks.common import (
    limits,
    number,
    string_list_problems,
    verdict,
)
from apps.options import is_number

# Errors and drops at or above this share of an interface's packets make it a problem.
DEFAULT_ERROR_PERCENT = 1.0


@checkers.register("network")
class NetworkChecker(Checker):
    """The number of network interfaces with a problem: down, or with errors and
    drops at or above ``error_percent`` of their packets since boot.

    Without ``interfaces`` every interface but loopback is looked at, and only
    one that is enabled but has no link counts as down: an interface nobody
    brought up, or a bridge with nothing attached, is not a fault. Interfaces
    named in ``interfaces`` count as down whenever they are not running."""

    name = "network"
    options = frozenset({"interfaces", "error_percent"})
    unit = "interfaces"
    default_thresholds = {"warning": 1.0, "critical": 2.0}

    def validate_options(self, options: dict) -> list[str]:
        messages = super().validate_options(options)
        messages += string_list_problems(self.name, "interfaces", options, "interface")
        if "error_percent" in options:
            limit = options["error_percent"]
            if not is_number(limit) or not 0 < limit <= 100:
                messages.append(
                    "option error_percent for check network must be a number above 0 "
                    f"and at most 100 (got {limit!r})"
                )
        return messages

    def run(self, *, thresholds: dict, options: dict) -> CheckResult:
        """Read the state and packet counters of the interfaces now.

        Raises ValueError for invalid options or an interface that does not exist."""
        problems = self.validate_options(options)
        if problems:
            raise ValueError("; ".join(problems))
        limit = limits(self, thresholds)
        error_limit = float(options.get("error_percent", DEFAULT_ERROR_PERCENT))
        stats = psutil.net_if_stats()
        counters = psutil.net_io_counters(pernic=True)
        explicit = "interfaces" in options
        if explicit:
            names = list(dict.fromkeys(options["interfaces"]))
            missing = [name for name in names if name not in stats and name not in counters]
            if missing:
                raise ValueError(f"Network interface not found: {', '.join(missing)}")
        else:
            names = sorted(
                name for name in set(stats) | set(counters) if not _is_loopback(name, stats.get(name))
            )
        interfaces = {
            name: _interface(name, stats.get(name), counters.get(name), explicit, error_limit)
            for name in names
        }
        troubled = {name: i["problems"] for name, i in interfaces.items() if i["problems"]}
        value = float(len(troubled))
        status = self.status_for(value, limit)
        listed = "; ".join(f"{name} {', '.join(found)}" for name, found in troubled.items())
        return CheckResult(
            name=self.name,
            status=status,
            value=value,
            unit=self.unit,
            message=(
                f"Network interfaces with problems: {len(troubled)} of {len(interfaces)} "
                f"{verdict(status, limit, unit='')}" + (f": {listed}" if listed else "")
            ),
            details={
                "interfaces": interfaces,
                "with_problems": list(troubled),
                "error_percent_limit": error_limit,
            },
        )


def _flags(stat) -> set[str]:
    # psutil reports flags on Linux, BSD and macOS; elsewhere the string is empty.
    return {flag for flag in (getattr(stat, "flags", "") or "").split(",") if flag}


def _is_loopback(name: str, stat) -> bool:
    return name == "lo" or (stat is not None and "loopback" in _flags(stat))


def _idle_bridge(name: str) -> bool:
    """Whether ``name`` is a Linux bridge with no member interfaces (docker0 with
    no container running), which has no link until something joins it."""
    members = f"/sys/class/net/{name}/brif"
    try:
        return os.path.isdir(members) and not os.listdir(members)
    except OSError:
        return False


def _state(name: str, stat) -> str:
    """up; disabled (nobody brought it up); idle bridge; down (enabled, no link); unknown."""
    if stat is None:
        return "unknown"
    if stat.isup:
        return "up"
    flags = _flags(stat)
    if flags and "up" not in flags:
        return "disabled"
    if _idle_bridge(name):
        return "idle bridge"
    return "down"


def _interface(name: str, stat, counter, explicit: bool, error_limit: float) -> dict:
    """The state, counters and problems of one interface."""
    state = _state(name, stat)
    # An interface someone asked about by name is a problem whenever it is not running.
    found = [state] if state == "down" or (explicit and state not in ("up", "unknown")) else []
    info: dict = {"state": state}
    if stat is not None:
        info["speed_mbps"] = stat.speed
        info["mtu"] = stat.mtu
    if counter is not None:
        packets = counter.packets_sent + counter.packets_recv
        lost = counter.errin + counter.errout + counter.dropin + counter.dropout
        # Lost packets are counted apart from delivered ones, so the share is of both.
        percent = round(lost / (packets + lost) * 100, 2) if packets + lost else 0.0
        info.update(
            packets_sent=counter.packets_sent,
            packets_recv=counter.packets_recv,
            errin=counter.errin,
            errout=counter.errout,
            dropin=counter.dropin,
            dropout=counter.dropout,
            error_percent=percent,
        )
        if lost and percent >= error_limit:
            found.append(f"errors and drops {number(percent)}% of packets")
    info["problems"] = found
    return info
