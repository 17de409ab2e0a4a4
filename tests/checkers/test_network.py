"""The `network` check (apps/checkers/checks/network.py)."""
from __future__ import annotations

import json

import psutil
import pytest

from apps.checkers.checks.network import NetworkChecker

FORCE_CRITICAL = {"warning": 0, "critical": 0}
FORCE_WARNING = {"warning": 0, "critical": 1000}
FORCE_OK = {"warning": 1000, "critical": 1000}


def loopbacks() -> set[str]:
    return {name for name, stat in psutil.net_if_stats().items() if "loopback" in stat.flags or name == "lo"}


def disabled_interfaces() -> list[str]:
    """Interfaces of this machine nobody brought up (Linux ifb0, a spare NIC)."""
    return sorted(
        name for name, stat in psutil.net_if_stats().items() if stat.flags and "up" not in stat.flags.split(",")
    )


@pytest.mark.parametrize(
    "thresholds, status",
    [(FORCE_CRITICAL, "critical"), (FORCE_WARNING, "warning"), (FORCE_OK, "ok")],
)
def test_status_follows_the_thresholds_on_the_real_interfaces(thresholds, status):
    result = NetworkChecker().run(thresholds=thresholds, options={})
    assert result.status == status
    assert result.unit == "interfaces"
    assert result.value == len(result.details["with_problems"])
    assert result.message.startswith(
        f"Network interfaces with problems: {int(result.value)} of {len(result.details['interfaces'])} ("
    )
    json.dumps(result.to_dict())


def test_every_interface_but_loopback_is_looked_at_by_default():
    result = NetworkChecker().run(thresholds={}, options={})
    everything = set(psutil.net_if_stats()) | set(psutil.net_io_counters(pernic=True))
    assert set(result.details["interfaces"]) == everything - loopbacks()
    counters = psutil.net_io_counters(pernic=True)
    for name, info in result.details["interfaces"].items():
        assert info["state"] in {"up", "down", "disabled", "idle bridge", "unknown"}
        if name in counters:
            # Counters only grow, so the reading lies between zero and now.
            assert 0 <= info["packets_recv"] <= counters[name].packets_recv
            assert info["error_percent"] >= 0


def test_interfaces_restrict_the_check_and_a_running_one_has_no_problem():
    result = NetworkChecker().run(thresholds={}, options={"interfaces": ["lo", "lo"]})
    assert list(result.details["interfaces"]) == ["lo"]
    assert result.details["interfaces"]["lo"]["state"] == "up"
    assert (result.status, result.value) == ("ok", 0.0)
    assert result.message == "Network interfaces with problems: 0 of 1 (ok, warning at 1)"


@pytest.mark.skipif(not disabled_interfaces(), reason="every interface of this machine is up")
def test_a_disabled_interface_is_no_problem_unless_asked_for_by_name():
    name = disabled_interfaces()[0]
    by_default = NetworkChecker().run(thresholds={}, options={})
    assert by_default.details["interfaces"][name]["state"] == "disabled"
    assert name not in by_default.details["with_problems"]

    named = NetworkChecker().run(thresholds={}, options={"interfaces": [name]})
    assert named.details["with_problems"] == [name]
    assert (named.status, named.value) == ("warning", 1.0)
    assert named.message == (
        f"Network interfaces with problems: 1 of 1 (warning, at or above 1, critical at 2): {name} disabled"
    )


def test_an_unknown_interface_is_a_clear_error():
    with pytest.raises(ValueError) as excinfo:
        NetworkChecker().run(thresholds={}, options={"interfaces": ["lo", "nope0", "nope1"]})
    assert str(excinfo.value) == "Network interface not found: nope0, nope1"


# No interface of a test machine loses its link or packets on demand: stand in psutil's readings.
def fake_interfaces(monkeypatch, stats: dict, counters: dict):
    monkeypatch.setattr(psutil, "net_if_stats", lambda: stats)
    monkeypatch.setattr(psutil, "net_io_counters", lambda pernic=False: counters)


def nic(flags: str, isup: bool):
    snicstats = type(next(iter(psutil.net_if_stats().values())))
    return snicstats(isup, psutil.NIC_DUPLEX_FULL, 1000, 1500, flags)


def io(packets: int, errin=0, errout=0, dropin=0, dropout=0):
    snetio = type(next(iter(psutil.net_io_counters(pernic=True).values())))
    return snetio(10**6, 10**6, packets // 2, packets - packets // 2, errin, errout, dropin, dropout)


def test_lost_link_and_lossy_interfaces_are_counted(monkeypatch):
    fake_interfaces(
        monkeypatch,
        stats={
            "lo": nic("up,loopback,running", True),
            "eth0": nic("up,broadcast,running,multicast", True),
            "eth1": nic("up,broadcast,multicast", False),  # enabled, cable out
            "eth2": nic("up,broadcast,running,multicast", True),
            "eth3": nic("broadcast,multicast", False),  # never brought up
        },
        counters={
            "lo": io(1000, errin=999),
            "eth0": io(9900, errin=60, dropin=40),  # 100 lost of 10000: exactly 1%
            "eth1": io(0),
            "eth2": io(10000, dropin=99),  # just under 1%
            "eth3": io(0),
        },
    )
    result = NetworkChecker().run(thresholds={}, options={})
    assert result.details["with_problems"] == ["eth0", "eth1"]
    assert (result.status, result.value) == ("critical", 2.0)
    assert result.message == (
        "Network interfaces with problems: 2 of 4 (critical, at or above 2): "
        "eth0 errors and drops 1% of packets; eth1 down"
    )
    eth0 = result.details["interfaces"]["eth0"]
    assert (eth0["errin"], eth0["dropin"], eth0["error_percent"]) == (60, 40, 1.0)
    assert result.details["interfaces"]["eth2"]["problems"] == []
    assert result.details["interfaces"]["eth3"]["state"] == "disabled"

    stricter = NetworkChecker().run(thresholds={}, options={"error_percent": 0.5})
    assert stricter.details["with_problems"] == ["eth0", "eth1", "eth2"]


def test_network_defaults_are_1_and_2_interfaces():
    assert NetworkChecker.default_thresholds == {"warning": 1.0, "critical": 2.0}


@pytest.mark.parametrize(
    "options, messages",
    [
        ({"interfaces": "eth0"}, ["option interfaces for check network must be a list of non-empty strings"]),
        ({"interfaces": ["eth0", ""]}, ["option interfaces for check network must be a list of non-empty strings"]),
        ({"interfaces": []}, ["option interfaces for check network must name at least one interface"]),
        ({"error_percent": 0}, ["option error_percent for check network must be a number above 0 and at most 100 (got 0)"]),
        ({"error_percent": "1"}, ["option error_percent for check network must be a number above 0 and at most 100 (got '1')"]),
        ({"error_percent": 101}, ["option error_percent for check network must be a number above 0 and at most 100 (got 101)"]),
        ({"interface": ["eth0"]}, ["unknown option for check network: interface"]),
        ({"interfaces": ["eth0"], "error_percent": 0.1}, []),
    ],
)
def test_network_options_are_validated(options, messages):
    assert NetworkChecker().validate_options(options) == messages


def test_network_run_refuses_invalid_options():
    with pytest.raises(ValueError, match="option interfaces for check network must name at least one interface"):
        NetworkChecker().run(thresholds={}, options={"interfaces": []})
