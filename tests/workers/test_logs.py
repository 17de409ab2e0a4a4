"""A real worker with LOG_FORMAT=json writes one JSON object per line, and the
lines about a run (Celery's own included) carry its run id and trace id."""
import json

import pytest

pytestmark = pytest.mark.subprocess

DEFINITION = {
    "version": "1.0",
    "nodes": [
        {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "notify"},
        {"id": "notify", "type": "notify", "config": {"driver": "console"}},
    ],
}
TASK = "orchestration.execute_run"


def _lines_after_ready(log: str) -> list[str]:
    """The worker's output after its "ready." line: Celery's banner before it is printed, not logged."""
    lines = log.splitlines()
    ready = next(i for i, line in enumerate(lines) if " ready." in line)
    return lines[ready:]


def test_json_worker_log_lines_parse_and_carry_the_run_ids(cli, start_worker, tmp_path):
    worker = start_worker(LOG_FORMAT="json")
    path = tmp_path / "p.json"
    path.write_text(json.dumps(DEFINITION))
    result = cli("run_pipeline", "--config", str(path), "--wait", "--json", "--trace-id", "t-logs-1", LOG_FORMAT="json")
    assert result.exit_code == 0, result.stderr
    run = json.loads(result.stdout)
    assert worker.wait_for_log(f"Task {TASK}[run-{run['run_id']}-"), worker.log()
    assert worker.wait_for_log(" succeeded in "), worker.log()

    records = []
    for line in _lines_after_ready(worker.log()):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n{worker.log()}")
    assert all(isinstance(record, dict) for record in records)
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
        assert record["time"].endswith("Z") and record["time"][10] == "T", record

    about_run = [r for r in records if f"run_id={run['run_id']} " in r["message"] or "t-logs-1" in r["message"]]
    assert any(r["message"].startswith("event=run.end") for r in about_run), records
    for record in about_run:
        assert (record.get("run_id"), record.get("trace_id")) == (run["run_id"], "t-logs-1"), record

    task_lines = [r for r in records if r["message"].startswith(f"Task {TASK}[run-{run['run_id']}-")]
    received = [r for r in task_lines if r["message"].endswith(" received")]
    succeeded = [r for r in task_lines if " succeeded in " in r["message"]]
    assert len(received) == 1 and len(succeeded) == 1, task_lines
    # The received line is written by the worker's main process before the task starts: its ids come from
    # the message's arguments (run id, definition, trace id).
    assert (received[0]["run_id"], received[0]["trace_id"]) == (run["run_id"], "t-logs-1"), received
    assert (succeeded[0]["run_id"], succeeded[0]["trace_id"]) == (run["run_id"], "t-logs-1"), succeeded
    assert all(r.get("run_id") in (None, run["run_id"]) for r in records)
