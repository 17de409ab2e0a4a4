"""The checkers themselves, against the real readings of this machine."""
from __future__ import annotations

import json

import psutil
import pytest

from apps.checkers.base import checkers
from apps.checkers.checks.cpu import CpuChecker
from apps.checkers.checks.disk import DiskChecker, physical_filesystems
from apps.checkers.checks.load import LoadChecker
from apps.checkers.checks.memory import MemoryChecker

FAST = {"interval": 0.05}
FORCE_CRITICAL = {"warning": 0, "critical": 0}
FORCE_WARNING = {"warning": 0, "critical": 1000}
FORCE_OK = {"warning": 1e9, "critical": 1e9}


def test_every_checker_is_registered_under_its_name():
    assert checkers.keys() == ["cpu", "disk", "load", "memory", "network", "processes", "swap"]
    for key, checker_class in checkers.items():
        assert checker_class.name == key


@pytest.mark.parametrize(
    "checker, options",
    [(CpuChecker(), FAST), (MemoryChecker(), {}), (DiskChecker(), {}), (LoadChecker(), {})],
    ids=["cpu", "memory", "disk", "load"],
)
@pytest.mark.parametrize(
    "thresholds, status",
    [(FORCE_CRITICAL, "critical"), (FORCE_WARNING, "warning"), (FORCE_OK, "ok")],
)
def test_status_follows_the_thresholds_on_the_real_reading(checker, options, thresholds, status):
    result = checker.run(thresholds=thresholds, options=options)
    assert result.status == status
    assert result.name == checker.name
    assert result.value == round(result.value, 1)
    assert f"{result.value:.1f}%" in result.message
    json.dumps(result.to_dict())  # results travel through the database as JSON


def test_cpu_reads_a_percentage_and_reports_cpu_count():
    result = CpuChecker().run(thresholds={}, options=FAST)
    assert 0 <= result.value <= 100
    assert result.unit == "%"
    assert result.details["cpu_count"] == psutil.cpu_count()
    assert result.details["interval_seconds"] == 0.05


def test_cpu_message_names_the_value_and_the_default_warning_limit():
    result = CpuChecker().run(thresholds={"warning": 1000, "critical": 1000}, options=FAST)
    assert result.message == f"CPU usage {result.value:.1f}% (ok, warning at 1000%)"
    result = CpuChecker().run(thresholds=FORCE_WARNING, options=FAST)
    assert result.message == f"CPU usage {result.value:.1f}% (warning, at or above 0%, critical at 1000%)"
    result = CpuChecker().run(thresholds=FORCE_CRITICAL, options=FAST)
    assert result.message == f"CPU usage {result.value:.1f}% (critical, at or above 0%)"


def test_cpu_default_thresholds_are_80_and_95():
    assert CpuChecker.default_thresholds == {"warning": 80.0, "critical": 95.0}
    assert MemoryChecker.default_thresholds == {"warning": 85.0, "critical": 95.0}
    assert DiskChecker.default_thresholds == {"warning": 85.0, "critical": 95.0}
    assert LoadChecker.default_thresholds == {"warning": 100.0, "critical": 200.0}


@pytest.mark.parametrize("interval", [0, -1, 60.5, "1", True, None, float("nan")])
def test_cpu_rejects_an_interval_outside_0_to_60_seconds(interval):
    assert CpuChecker().validate_options({"interval": interval}) == [
        f"option interval for check cpu must be a number of seconds above 0 and at most 60 (got {interval!r})"
    ]


def test_cpu_accepts_an_interval_up_to_10_seconds_and_rejects_unknown_options():
    assert CpuChecker().validate_options({"interval": 10}) == []
    assert CpuChecker().validate_options({"interval": 0.01}) == []
    assert CpuChecker().validate_options({"intervall": 1}) == ["unknown option for check cpu: intervall"]


def test_cpu_run_refuses_an_invalid_interval():
    with pytest.raises(ValueError, match="option interval for check cpu"):
        CpuChecker().run(thresholds={}, options={"interval": 61})


def test_memory_matches_psutil_and_reports_bytes():
    result = MemoryChecker().run(thresholds={}, options={})
    memory = psutil.virtual_memory()
    assert abs(result.value - memory.percent) < 5
    assert result.details["total_bytes"] == memory.total
    assert 0 < result.details["available_bytes"] <= memory.total
    assert result.message.startswith(f"Memory usage {result.value:.1f}% (")
    assert "GiB available" in result.message


def test_memory_takes_no_options():
    assert MemoryChecker().validate_options({}) == []
    assert MemoryChecker().validate_options({"paths": ["/"]}) == ["unknown option for check memory: paths"]


def test_disk_checks_every_physical_filesystem_by_default():
    result = DiskChecker().run(thresholds={"warning": 1000, "critical": 1000}, options={})
    mounts = physical_filesystems(psutil.disk_partitions(all=False))
    expected = [part.mountpoint for part in mounts] or ["/"]
    paths = result.details["paths"]
    assert list(paths) == expected
    assert result.value == max(p["percent"] for p in paths.values())
    assert paths[result.details["path"]]["percent"] == result.value
    for part in mounts:
        entry = paths[part.mountpoint]
        assert (entry["device"], entry["fstype"]) == (part.device, part.fstype)
        usage = psutil.disk_usage(part.mountpoint)
        assert entry["total_bytes"] == usage.total
        assert abs(entry["percent"] - usage.percent) < 1
    among = f"; fullest of {len(paths)} filesystems" if len(paths) > 1 else ""
    assert result.message == (
        f"Disk usage {result.value:.1f}% on {result.details['path']} (ok, warning at 1000%){among}"
    )


def test_default_disk_check_leaves_out_pseudo_image_and_snap_mounts():
    result = DiskChecker().run(thresholds={}, options={})
    skipped = {"tmpfs", "devtmpfs", "squashfs", "overlay", "proc", "sysfs"}
    for path, entry in result.details["paths"].items():
        assert entry.get("fstype", "ext4") not in skipped
        assert not path.startswith("/snap/")


def test_physical_filesystems_keep_one_real_mount_per_device(tmp_path):
    for name in ("bind", "data", "cdrom", "shm"):
        (tmp_path / name).mkdir()
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    part = type(psutil.disk_partitions(all=True)[0])
    partitions = [
        part("/dev/vdc", str(tmp_path / "data"), "xfs", "rw"),
        part("/dev/vda1", str(tmp_path / "bind"), "ext4", "rw"),  # bind mount of the root device
        part("/dev/vda1", "/", "ext4", "rw"),
        part("/dev/loop3", "/snap/core22/1380", "squashfs", "ro,nodev"),
        part("/dev/loop4", "/", "squashfs", "ro"),  # a read-only image, whatever its mount point
        part("tmpfs", str(tmp_path / "shm"), "tmpfs", "rw"),
        part("/dev/sr0", str(tmp_path / "cdrom"), "iso9660", "ro"),
        part("/dev/vdb", str(tmp_path / "hosts"), "ext4", "rw"),  # a file bind-mounted into a container
    ]
    kept = physical_filesystems(partitions)
    assert [(p.device, p.mountpoint) for p in kept] == [
        ("/dev/vda1", "/"),
        ("/dev/vdc", str(tmp_path / "data")),
    ]


def test_disk_paths_restrict_the_check_to_their_filesystems():
    result = DiskChecker().run(thresholds={}, options={"paths": ["/"]})
    usage = psutil.disk_usage("/")
    assert abs(result.value - usage.percent) < 1
    assert result.details["path"] == "/"
    assert set(result.details["paths"]) == {"/"}
    root = result.details["paths"]["/"]
    assert root["total_bytes"] == usage.total
    assert root["percent"] == result.value
    assert result.message.startswith(f"Disk usage {result.value:.1f}% on / (")


def test_disk_reports_the_fullest_of_several_paths(tmp_path):
    result = DiskChecker().run(thresholds={}, options={"paths": [str(tmp_path), "/", "/"]})
    paths = result.details["paths"]
    assert list(paths) == [str(tmp_path), "/"]
    assert result.value == max(p["percent"] for p in paths.values())
    assert paths[result.details["path"]]["percent"] == result.value
    assert result.message.endswith("; fullest of 2 paths")


def test_disk_status_is_the_worst_path():
    result = DiskChecker().run(thresholds=FORCE_CRITICAL, options={"paths": ["/"]})
    assert result.status == "critical"
    assert result.details["paths"]["/"]["status"] == "critical"


def test_disk_missing_path_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError) as excinfo:
        DiskChecker().run(thresholds={}, options={"paths": ["/", missing]})
    assert str(excinfo.value) == f"Disk path not found: {missing}"


@pytest.mark.parametrize(
    "paths, message",
    [
        ("/", "option paths for check disk must be a list of non-empty strings"),
        ([""], "option paths for check disk must be a list of non-empty strings"),
        (["/", 3], "option paths for check disk must be a list of non-empty strings"),
        ([], "option paths for check disk must name at least one path"),
    ],
)
def test_disk_validates_paths(paths, message):
    assert DiskChecker().validate_options({"paths": paths}) == [message]


def test_disk_accepts_a_list_of_paths():
    assert DiskChecker().validate_options({"paths": ["/", "/tmp"]}) == []


def test_load_is_the_1_minute_load_per_cpu_in_percent():
    before = psutil.getloadavg()[0]
    result = LoadChecker().run(thresholds={}, options={})
    after = psutil.getloadavg()[0]
    cpus = psutil.cpu_count()
    assert result.details["cpu_count"] == cpus
    # The kernel refreshes the load every 5 s: the reading is one of the two around it.
    low, high = sorted((before, after))
    assert round(low / cpus * 100, 1) <= result.value <= round(high / cpus * 100, 1)
    assert {"load_1m", "load_5m", "load_15m"} <= set(result.details)
    assert result.message.startswith(f"Load {result.details['load_1m']:.2f} on {cpus} CPUs, {result.value:.1f}% of capacity (")


def test_load_takes_no_options():
    assert LoadChecker().validate_options({"x": 1}) == ["unknown option for check load: x"]
