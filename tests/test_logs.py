"""Log lines (apps/logs.py, apps/logcontext.py, settings.LOGGING): the run context
filter, the key=value text format and the JSON format, both with ISO UTC times."""
import json
import logging
import logging.config
import re
import threading
from datetime import UTC

import pytest

from apps.logcontext import RunContextFilter, current, ids_from_task_arguments, run_context

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _record(**attrs) -> logging.LogRecord:
    record = logging.LogRecord("celery.worker.strategy", logging.INFO, __file__, 1, "a line", (), None)
    record.__dict__.update(attrs)
    return record


def test_filter_adds_the_run_ids_inside_the_context_and_not_outside():
    stamp = RunContextFilter()
    outside = _record()
    assert stamp.filter(outside) and not hasattr(outside, "run_id") and not hasattr(outside, "trace_id")
    with run_context(7, "t-7"):
        inside = _record()
        stamp.filter(inside)
        assert (inside.run_id, inside.trace_id) == (7, "t-7")
    after = _record()
    stamp.filter(after)
    assert not hasattr(after, "run_id") and current() is None


def test_a_line_naming_another_run_keeps_its_own_ids():
    with run_context(7, "t-7"):
        record = _record(run_id=8, trace_id="t-8")
        RunContextFilter().filter(record)
    assert (record.run_id, record.trace_id) == (8, "t-8")


def test_context_does_not_leak_into_other_threads():
    seen = []
    with run_context(7, "t-7"):
        thread = threading.Thread(target=lambda: seen.append(current()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_celery_received_line_takes_the_ids_from_the_task_arguments():
    # Celery's "Task ... received" line, written by the worker's main process before the task starts.
    data = {"id": "run-5-abc", "name": "orchestration.execute_run", "args": "[5]", "kwargs": "{}", "eta": None}
    record = _record(data=data)
    RunContextFilter().filter(record)
    assert record.run_id == 5 and not hasattr(record, "trace_id")
    record = _record(data={**data, "args": "()", "kwargs": "{'run_id': 6, 'trace_id': 't-6'}"})
    RunContextFilter().filter(record)
    assert (record.run_id, record.trace_id) == (6, "t-6")
    other = _record(data={**data, "name": "orchestration.recover_runs", "args": "[5]"})
    RunContextFilter().filter(other)
    assert not hasattr(other, "run_id")


@pytest.mark.parametrize("args, kwargs", [("[True]", "{}"), ("['5']", "{}"), ("[5", "{}"), ("__import__('os')", "x")])
def test_task_arguments_that_name_no_run_give_no_ids(args, kwargs):
    assert ids_from_task_arguments(args, kwargs) is None


def test_text_format_is_key_value_pairs_with_an_iso_utc_time(log_to):
    logger, out = log_to("text")
    logger.info("outside any run")
    with run_context(7, "t-7"):
        logger.warning('Task %s succeeded: "ok" \\ done', "x")
    first, second = out.getvalue().splitlines()
    assert re.fullmatch(rf"time={ISO_UTC.pattern} level=INFO process=MainProcess logger=tests\.logs\.\w+ "
                        r'msg="outside any run"', first)
    assert re.fullmatch(rf"time={ISO_UTC.pattern} level=WARNING process=MainProcess logger=tests\.logs\.\w+ "
                        r'run_id=7 trace_id=t-7 msg="Task x succeeded: \\"ok\\" \\\\ done"', second)


def test_json_format_parses_with_an_iso_utc_time_and_the_run_ids(log_to):
    logger, out = log_to("json")
    logger.info("outside any run")
    with run_context(7, "t-7"):
        logger.info("event=run.start", extra={"event": "run.start"})
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert ISO_UTC.fullmatch(first["time"]) and ISO_UTC.fullmatch(second["time"])
    assert {key: first[key] for key in ("level", "message")} == {"level": "INFO", "message": "outside any run"}
    assert "run_id" not in first and "trace_id" not in first
    assert first["logger"].startswith("tests.logs.")
    assert (second["event"], second["run_id"], second["trace_id"]) == ("run.start", 7, "t-7")


def test_timestamps_are_utc_whatever_the_local_zone(log_to, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        logger, out = log_to("json")
        logger.info("now")
        stamp = json.loads(out.getvalue())["time"]
    finally:
        monkeypatch.undo()
        time.tzset()
    from datetime import datetime

    written = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - written).total_seconds()) < 60


@pytest.mark.parametrize("fraction", [0.0, 0.0004, 0.5, 0.998999, 0.999, 0.9999989, 0.9999995, 0.99999951, 0.9999999])
def test_the_time_is_written_as_datetime_writes_it_next_to_a_second_boundary(fraction):
    from datetime import datetime

    from apps.logs import iso_utc

    # Seconds in turn, twice each, with times that datetime rounds into the next second.
    for created in (1_800_000_000 + fraction, 1_800_000_001 + fraction, 1_800_000_001 + fraction, 59.0 + fraction):
        record = _record(created=created, msecs=int((created - int(created)) * 1000) + 0.0)
        moment = datetime.fromtimestamp(created, tz=UTC)
        assert iso_utc(record) == f"{moment:%Y-%m-%dT%H:%M:%S}.{int(record.msecs):03d}Z"


def test_level_process_and_logger_names_are_escaped_each_time(log_to):
    logger, out = log_to("text", name="tests.logs.odd\x1bname")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.info("one")
    logger.info("two")
    for line in out.getvalue().splitlines():
        assert " logger=tests.logs.odd\\x1bname " in line
