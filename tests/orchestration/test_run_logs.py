"""Per-run logs: the lines a run's execution logs are kept with the run, in
order, bounded, scrubbed, written with the engine's fenced writes (no
statement per line), continued across a takeover, pruned with the run, and
shown by ``show_run --logs``."""
from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext, override_settings

from apps.orchestration import engine, lease, runlogs
from apps.orchestration.models import PipelineRun, RunLogLine
from apps.orchestration.nodes import NodeContext, NodeType, node_types
from apps.orchestration.pruning import pipeline_runs_prune
from apps.orchestration.runlogs import marker_text
from apps.orchestration.selectors import run_log_lines_list
from apps.secrets import REDACTED
from tests.orchestration.test_engine_queries import writes
from tests.support import make_run

# Real commits, as on a worker: the lines are written by the engine's own fenced writes.
pytestmark = pytest.mark.django_db(transaction=True)

# A logger under "apps": at INFO, as the project's lines are (the root logger passes only warnings).
node_logger = logging.getLogger("apps.tests.log_lines")
other_logger = logging.getLogger("apps.tests.elsewhere")


@node_types.register("log_lines")
class LogLinesNode(NodeType):
    """A node that logs ``count`` lines ``<text> <i>`` (and, with ``thread``, one more from a thread of its own,
    with ``other_run``, one naming another run, and with ``odd``, one holding a NUL and a lone surrogate)."""

    name = "log_lines"
    options = frozenset({"count", "text", "thread", "other_run", "odd"})

    def run(self, config: dict, ctx: NodeContext) -> dict:
        count = config.get("count", 1)
        for index in range(count):
            node_logger.info("%s %d", config.get("text", "line"), index)
        if config.get("thread"):
            side = threading.Thread(target=lambda: node_logger.info("from a thread of the node"))
            side.start()
            side.join()
        if config.get("odd"):
            node_logger.info("nul \x00 and \ud800 here")
        if config.get("other_run"):
            node_logger.info("about another run", extra={"run_id": config["other_run"]})
        return {"logged": count}


def lines_of(run) -> list[RunLogLine]:
    return run_log_lines_list(run_id=run.pk)


def messages(run) -> list[str]:
    return [line.message for line in lines_of(run)]


def test_a_run_keeps_its_engine_node_and_console_driver_lines_in_order():
    run = make_run([
        {"id": "talk", "type": "log_lines", "config": {"count": 3, "text": "talking"}, "next": "notify"},
        {"id": "notify", "type": "notify", "config": {"driver": "console"}},
    ], name="talkative")
    done = engine.run_execute(run_id=run.pk)
    assert done.status == "completed", done.error
    lines = lines_of(run)
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
    assert lines[0].message.startswith("event=run.start ") and lines[0].node_id == ""
    assert lines[-1].message.startswith("event=run.end ") and "status=completed" in lines[-1].message
    talk = [line for line in lines if line.logger == "apps.tests.log_lines"]
    assert [(line.node_id, line.message) for line in talk] == [("talk", f"talking {i}") for i in range(3)]
    console = [line for line in lines if line.logger == "apps.notify.console"]
    assert len(console) == 1 and console[0].node_id == "notify" and console[0].level == "INFO"
    # The driver's message as written, its newline kept (the displays escape it).
    assert console[0].message.startswith("[OK] talkative on ") and f"\nPipeline: talkative (run {run.pk}," in console[0].message
    starts = [line.node_id for line in lines if line.message.startswith("event=node.start ")]
    assert starts == ["talk", "notify"]
    times = [line.logged_at for line in lines]
    assert times == sorted(times) and done.started_at - timedelta(seconds=1) <= times[0]
    assert times[-1] <= done.finished_at + timedelta(seconds=1)


def test_lines_of_other_threads_and_other_runs_are_not_kept():
    other = make_run(name="other")
    run = make_run([
        {"id": "talk", "type": "log_lines", "config": {"count": 1, "thread": True, "other_run": other.pk}},
    ], name="threads")
    engine.run_execute(run_id=run.pk)
    kept = messages(run)
    assert "line 0" in kept
    assert "from a thread of the node" not in kept and "about another run" not in kept
    assert not RunLogLine.objects.filter(run=other).exists()


@override_settings(RUN_LOG_MAX_LINES=5)
def test_a_run_keeps_at_most_run_log_max_lines_and_one_marker_saying_how_many_more():
    run = make_run([{"id": "talk", "type": "log_lines", "config": {"count": 40}}], name="bounded")
    engine.run_execute(run_id=run.pk)
    lines = lines_of(run)
    # Logged: run.start, node.start, 40 lines, node.end, run.end = 44; kept 5, the marker counts the other 39.
    assert [line.seq for line in lines] == [1, 2, 3, 4, 5, 6]
    assert [line.message for line in lines[2:5]] == ["line 0", "line 1", "line 2"]
    marker = lines[-1]
    assert marker.message == marker_text(39, 5) == "… 39 more lines not kept (RUN_LOG_MAX_LINES=5)"
    assert marker.level == "WARNING"
    assert sum("not kept" in line.message for line in lines) == 1


def test_a_run_under_the_bound_has_no_marker():
    run = make_run([{"id": "talk", "type": "log_lines", "config": {"count": 2}}], name="short")
    engine.run_execute(run_id=run.pk)
    assert not any("not kept" in text for text in messages(run))


def test_a_secret_in_a_node_log_line_is_scrubbed_in_the_stored_row(monkeypatch):
    secret = "https://hooks.slack.test/services/T0SECRET99/B0SECRET88/abcdefSECRET123"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", secret)
    run = make_run([{"id": "talk", "type": "log_lines", "config": {"count": 1, "text": f"posting to {secret}"}}],
                   name="leaky")
    engine.run_execute(run_id=run.pk)
    stored = [text for text in messages(run) if text.startswith("posting to ")]
    assert stored == [f"posting to {REDACTED} 0"]
    assert not RunLogLine.objects.filter(message__contains="SECRET").exists()


def test_text_no_database_column_takes_is_stored_escaped():
    run = make_run([{"id": "talk", "type": "log_lines", "config": {"count": 0, "odd": True}}], name="odd")
    done = engine.run_execute(run_id=run.pk)
    assert done.status == "completed", done.error
    assert "nul \\x00 and \\ud800 here" in messages(run)


def test_logging_adds_no_query_per_line(monkeypatch):
    # Lines with every write, on SQLite too (there they wait for the end while a run is young):
    # the count compared does not then depend on how fast this machine runs them.
    monkeypatch.setattr(runlogs, "LIVE_AFTER_SECONDS", 0.0)

    def queries(count: int) -> list[str]:
        run = make_run([
            {"id": "a", "type": "transform", "config": {"mapping": {"x": "payload.x"}}, "next": "talk"},
            {"id": "talk", "type": "log_lines", "config": {"count": count}, "next": "c"},
            {"id": "c", "type": "transform", "config": {"mapping": {"z": "a.x"}}},
        ], name=f"talk-{count}", payload={"x": 1})
        with CaptureQueriesContext(connection) as captured:
            done = engine.run_execute(run_id=run.pk)
        assert done.status == "completed" and len(messages(run)) == count + 8
        return [q["sql"] for q in captured.captured_queries]

    few, many = queries(5), queries(200)
    shown = "\n".join(s[:120] for s in many)
    assert len(many) == len(few), shown
    assert sum(writes(s) for s in many) == sum(writes(s) for s in few), shown


def test_the_lines_go_with_the_fenced_writes_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("one statement per write needs PostgreSQL (SQLite inserts the lines with a fenced statement)")
    run = make_run([
        {"id": "talk", "type": "log_lines", "config": {"count": 3}, "next": "c"},
        {"id": "c", "type": "transform", "config": {"mapping": {"z": "payload.x"}}},
    ], name="together", payload={"x": 1})
    with CaptureQueriesContext(connection) as captured:
        engine.run_execute(run_id=run.pk)
    inserting = [q["sql"] for q in captured.captured_queries if "orchestration_runlogline" in q["sql"]]
    # The write opening node c (with talk's lines) and the end: both the engine's own fenced statements.
    assert len(inserting) == 2 and all(s.lstrip().upper().startswith("WITH HELD AS") for s in inserting)


def test_a_process_that_lost_its_lease_writes_no_lines():
    run = make_run(name="lost")
    claim = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    PipelineRun.objects.filter(pk=run.pk).update(claimed_by="host-b:2:b")
    line = (1, claim.lease.clock.now(), "INFO", "apps.tests", "", "too late")
    with pytest.raises(lease.LeaseLost):
        claim.lease.write(run_fields={"current_node": "a"}, log_lines=[line])
    assert not RunLogLine.objects.filter(run=run).exists()


def test_a_takeover_numbers_its_lines_after_the_lost_holder_s():
    run = make_run([{"id": "talk", "type": "log_lines", "config": {"count": 2}}], name="taken")
    old = lease.run_claim(run_id=run.pk, token="host-a:1:a").lease
    earlier = [(seq, old.clock.now(), "INFO", "apps.tests", "talk", f"before {seq}") for seq in (1, 2, 3)]
    old.write(run_fields={"current_node": "talk"}, log_lines=earlier)
    PipelineRun.objects.filter(pk=run.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    done = engine.run_execute(run_id=run.pk)
    assert done.status == "completed", done.error
    lines = lines_of(run)
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
    assert [line.message for line in lines[:3]] == ["before 1", "before 2", "before 3"]
    assert "takeover=True" in lines[3].message and lines[3].message.startswith("event=run.start ")


def test_the_selector_reads_after_a_seq_with_a_limit():
    run = make_run([{"id": "talk", "type": "log_lines", "config": {"count": 6}}], name="paged")
    engine.run_execute(run_id=run.pk)
    total = len(lines_of(run))
    page = run_log_lines_list(run_id=run.pk, after_seq=2, limit=3)
    assert [line.seq for line in page] == [3, 4, 5]
    assert [line.seq for line in run_log_lines_list(run_id=run.pk, after_seq=total)] == []
    assert run_log_lines_list(run_id=2**70) == []


def test_pruning_deletes_a_run_s_lines_and_a_dry_run_counts_them():
    run = make_run([{"id": "talk", "type": "log_lines", "config": {"count": 4}}], name="pruned")
    kept = make_run([{"id": "talk", "type": "log_lines", "config": {"count": 1}}], name="kept")
    engine.run_execute(run_id=run.pk)
    engine.run_execute(run_id=kept.pk)
    PipelineRun.objects.filter(pk=run.pk).update(created_at=Now() - timedelta(days=40))
    count = RunLogLine.objects.filter(run=run).count()
    dry = pipeline_runs_prune(older_than=timedelta(days=30), dry_run=True)
    assert (dry.runs, dry.stages, dry.log_lines) == (1, 1, count)
    assert RunLogLine.objects.filter(run=run).count() == count
    done = pipeline_runs_prune(older_than=timedelta(days=30), batch_size=1)
    assert (done.runs, done.stages, done.log_lines) == (1, 1, count)
    assert not RunLogLine.objects.filter(run_id=run.pk).exists()
    assert RunLogLine.objects.filter(run=kept).exists()


def test_show_run_logs_prints_the_lines_after_the_display(capsys):
    run = make_run([
        {"id": "talk", "type": "log_lines", "config": {"count": 1, "text": "evil \x1b[2J text"}, "next": "notify"},
        {"id": "notify", "type": "notify", "config": {"driver": "console"}},
    ], name="shown")
    engine.run_execute(run_id=run.pk)
    call_command("show_run", str(run.pk))
    plain = capsys.readouterr().out
    call_command("show_run", str(run.pk), "--logs")
    out = capsys.readouterr().out
    assert out.startswith(plain.rstrip("\n")), "the display without --logs is unchanged, and comes first"
    block = out[len(plain.rstrip("\n")):].strip("\n").split("\n")
    lines = lines_of(run)
    assert block[0] == f"Logs ({len(lines)} lines):" and len(block) == len(lines) + 1
    first = lines[0]
    stamp = first.logged_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert block[1] == f"{stamp} INFO apps.orchestration.engine [-] {first.message}"
    assert any(" INFO apps.tests.log_lines [talk] evil \\x1b[2J text 0" in line for line in block)
    assert any(" INFO apps.notify.console [notify] [OK] shown on " in line and "\\nPipeline: shown" in line
               for line in block)
    assert "\x1b" not in out


def test_show_run_logs_json_lists_them(capsys):
    run = make_run([{"id": "talk", "type": "log_lines", "config": {"count": 2}}], name="json")
    engine.run_execute(run_id=run.pk)
    call_command("show_run", str(run.pk), "--json")
    assert "logs" not in json.loads(capsys.readouterr().out)
    call_command("show_run", str(run.pk), "--json", "--logs")
    data = json.loads(capsys.readouterr().out)
    assert [line["seq"] for line in data["logs"]] == [line.seq for line in lines_of(run)]
    talk = [line for line in data["logs"] if line["logger"] == "apps.tests.log_lines"]
    assert talk == [
        {"seq": talk[0]["seq"], "time": talk[0]["time"], "level": "INFO", "logger": "apps.tests.log_lines",
         "node": "talk", "message": "line 0"},
        {"seq": talk[0]["seq"] + 1, "time": talk[1]["time"], "level": "INFO", "logger": "apps.tests.log_lines",
         "node": "talk", "message": "line 1"},
    ]


def test_show_run_logs_of_a_failed_run_prints_them_before_the_error(capsys):
    run = make_run([{"id": "t", "type": "transform", "config": {"mapping": {"x": "payload.missing"}}}], name="bad")
    engine.run_execute(run_id=run.pk)
    with pytest.raises(CommandError) as raised:
        call_command("show_run", str(run.pk), "--logs")
    assert raised.value.returncode == 1
    out = capsys.readouterr().out
    assert "✗ Pipeline failed" in out and out.index("✗ Pipeline failed") < out.index("Logs (")
    assert "event=run.end " in out.rsplit("Logs (", 1)[1]


def test_run_pipeline_inline_logs_prints_the_run_s_lines(tmp_path, capsys):
    path = tmp_path / "inline.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": [
        {"id": "talk", "type": "log_lines", "config": {"count": 2, "text": "inline"}},
    ]}))
    call_command("run_pipeline", "--config", str(path), "--inline", "--logs")
    out = capsys.readouterr().out
    display, block = out.split("\nLogs (", 1)
    assert display.rstrip().endswith("✓ Pipeline completed successfully")
    assert " INFO apps.tests.log_lines [talk] inline 1" in block and "event=run.end " in block


def test_run_pipeline_logs_without_waiting_is_refused_and_launches_nothing(tmp_path):
    path = tmp_path / "nowait.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": [{"id": "talk", "type": "log_lines", "config": {}}]}))
    with pytest.raises(CommandError) as raised:
        call_command("run_pipeline", "--config", str(path), "--logs")
    assert raised.value.returncode == 2
    assert str(raised.value) == "--logs applies only with --wait, --follow or --inline"
    assert not PipelineRun.objects.exists()


def test_show_run_logs_of_a_running_run_prints_the_lines_stored_so_far(capsys):
    run = make_run([{"id": "talk", "type": "log_lines", "config": {}}], name="going")
    claim = lease.run_claim(run_id=run.pk, token="host-a:1:a")
    line = (1, claim.lease.clock.now(), "WARNING", "apps.tests", "talk", "so far")
    claim.lease.write(run_fields={"current_node": "talk"}, log_lines=[line])
    with pytest.raises(SystemExit) as raised:
        call_command("show_run", str(run.pk), "--logs")
    assert raised.value.code == 3
    out = capsys.readouterr().out
    assert "Current node: talk" in out
    assert out.rstrip("\n").endswith("Logs (1 line):\n" + f"{line[1]:%Y-%m-%d %H:%M:%S} UTC WARNING apps.tests [talk] so far")
