"""The `swap` check (apps/checkers/checks/swap.py)."""
from __future__ import annotations

import json

import psutil
import pytest

from apps.checkers.checks.swap import SwapChecker

FORCE_CRITICAL = {"warning": 0, "critical": 0}
FORCE_WARNING = {"warning": 0, "critical": 1000}
FORCE_OK = {"warning": 1000, "critical": 1000}
THRESHOLDS = [(FORCE_CRITICAL, "critical"), (FORCE_WARNING, "warning"), (FORCE_OK, "ok")]
HAS_SWAP = psutil.swap_memory().total > 0


@pytest.mark.skipif(not HAS_SWAP, reason="this machine has no swap")
@pytest.mark.parametrize("thresholds, status", THRESHOLDS)
def test_status_follows_the_thresholds_on_the_real_swap(thresholds, status):
    result = SwapChecker().run(thresholds=thresholds, options={})
    assert result.status == status
    assert abs(result.value - psutil.swap_memory().percent) < 5
    assert result.message.startswith(f"Swap usage {result.value:.1f}% (")
    json.dumps(result.to_dict())


@pytest.mark.skipif(HAS_SWAP, reason="this machine has swap")
@pytest.mark.parametrize("thresholds", [FORCE_CRITICAL, FORCE_WARNING, FORCE_OK, {}])
def test_a_host_without_swap_is_ok_at_0_whatever_the_thresholds(thresholds):
    result = SwapChecker().run(thresholds=thresholds, options={})
    assert (result.status, result.value, result.unit) == ("ok", 0.0, "%")
    assert result.message == "Swap usage 0.0%: no swap is configured on this host (ok)"
    assert result.details["total_bytes"] == 0


# This machine may have no swap, and adding some needs root: stand in psutil's reading of a 4 GiB swap.
@pytest.mark.parametrize(
    "thresholds, status, verdict",
    [
        ({}, "ok", "(ok, warning at 50%)"),
        ({"warning": 20}, "warning", "(warning, at or above 20%, critical at 80%)"),
        ({"warning": 10, "critical": 25}, "critical", "(critical, at or above 25%)"),
    ],
)
def test_swap_in_use_is_compared_with_the_thresholds(monkeypatch, thresholds, status, verdict):
    sswap = type(psutil.swap_memory())
    gib = 2**30
    monkeypatch.setattr(psutil, "swap_memory", lambda: sswap(4 * gib, gib, 3 * gib, 25.0, 4096, 8192))
    result = SwapChecker().run(thresholds=thresholds, options={})
    assert (result.status, result.value) == (status, 25.0)
    assert result.message == f"Swap usage 25.0% {verdict}, 1.0 GiB of 4.0 GiB used"
    assert result.details == {
        "total_bytes": 4 * gib,
        "used_bytes": gib,
        "free_bytes": 3 * gib,
        "swapped_in_bytes": 4096,
        "swapped_out_bytes": 8192,
    }


def test_swap_defaults_are_50_and_80_and_it_takes_no_options():
    assert SwapChecker.default_thresholds == {"warning": 50.0, "critical": 80.0}
    assert SwapChecker().validate_options({}) == []
    assert SwapChecker().validate_options({"paths": ["/"]}) == ["unknown option for check swap: paths"]
