"""Hostile input through every command's options: one clear line and exit 2 with
nothing stored, or a clean run; never a traceback, never a raw control character.

The commands run through ``run_from_argv``, the path ``manage.py`` takes, so
argparse errors and CommandError are handled as a user sees them.
"""
from __future__ import annotations

import io
import itertools
import json
import os
import re
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout

import pytest
from django.core.management import load_command_class

from apps.hostnames import host_name
from apps.jsondata import MAX_DEPTH
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.conftest import CommandResult
from tests.hostile import HOSTILE_JSON, HOSTILE_TEXT

pytestmark = pytest.mark.django_db(transaction=True)

TINY = {
    "version": "1.0",
    "nodes": [
        {
            "id": "shape",
            "type": "transform",
            "config": {"mapping": {"server": "payload.server"}, "defaults": {"server": "unknown"}},
        }
    ],
}



def cli(*argv: str) -> CommandResult:
    """Run a command of this project as ``manage.py`` would; a traceback becomes exit code -1."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            # Made here: a command binds its output to sys.stdout and sys.stderr when it is created.
            command = load_command_class("apps.orchestration", argv[0])
            command.run_from_argv(["manage.py", *argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - the point is to report any of them
            err.write(traceback.format_exc())
            code = -1
    return CommandResult(code, out.getvalue(), err.getvalue())


def rows() -> tuple[int, int, int]:
    return PipelineRun.objects.count(), StageExecution.objects.count(), PipelineDefinition.objects.count()


class Verdicts:
    """Collects every case that broke a rule, so one run reports them all."""

    def __init__(self):
        self.failures: list[str] = []

    def check(self, argv: tuple, result: CommandResult, before: tuple, *, refused: bool | None, report: bool) -> None:
        label = " ".join(repr(a[:40]) for a in argv)
        shown = result.stdout + result.stderr
        problems = []
        if result.exit_code == -1 or "Traceback" in shown:
            problems.append("traceback")
        if any(not (c.isprintable() or c == "\n") for c in shown):
            problems.append("raw control character in the output")
        if refused is True and result.exit_code != 2:
            problems.append(f"exit {result.exit_code}, expected 2")
        if result.exit_code == 2:
            if rows() != before:
                problems.append(f"rows changed {before} -> {rows()}")
            if report:  # a list of refusals, one per line, each line saying what it is
                lines = result.stderr.strip().splitlines()
                if not all(line.startswith(("refused: ", "  - ", "CommandError: ")) for line in lines):
                    problems.append("a line of the refusal report is not one of its own")
            else:
                if result.stderr.strip().count("\n") != 0 and "Pipeline definition invalid" not in result.stderr:
                    problems.append("more than one line of error")
                if result.stdout:
                    problems.append("refused input printed on stdout")
        elif result.exit_code in (0, 1):
            latest = PipelineRun.objects.order_by("-pk").first()
            if latest is not None and not latest.is_terminal and "--dry-run" not in argv:
                problems.append(f"run left {latest.status}")
        elif result.exit_code not in (3, 4):
            problems.append(f"exit {result.exit_code}")
        if problems:
            self.failures.append(f"{label}: {', '.join(problems)}\n    stderr: {result.stderr[-300:]!r}")

    def run(self, *argv: str, refused: bool | None = None, report: bool = False) -> CommandResult:
        before = rows()
        result = cli(*argv)
        self.check(argv, result, before, refused=refused, report=report)
        return result

    def assert_clean(self):
        assert not self.failures, f"{len(self.failures)} hostile inputs mishandled:\n" + "\n".join(self.failures)


@pytest.fixture
def verdicts():
    return Verdicts()


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture
def hostile_files(tmp_path):
    """name -> path of a file holding one HOSTILE_JSON document, plus odd files."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    paths = {}
    for name, text in HOSTILE_JSON.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(text, encoding="utf-8", errors="surrogatepass")
    paths["binary"] = folder / "binary.json"
    paths["binary"].write_bytes(bytes(range(256)) * 16)
    paths["huge"] = folder / "huge.json"
    with open(paths["huge"], "w") as handle:  # 8 MB of a valid object: refused as a payload only by its depth
        handle.write('{"pad": "' + "p" * 8_000_000 + '", "deep": ' + "[" * 100 + "]" * 100 + "}")
    paths["directory"] = folder / "a-directory.json"
    paths["directory"].mkdir()
    paths["fifo"] = folder / "fifo.json"
    os.mkfifo(paths["fifo"])
    paths["loop"] = folder / "loop.json"
    paths["loop"].symlink_to(paths["loop"])
    return {name: str(path) for name, path in paths.items()}


def test_hostile_json_in_payloads_and_config_files_is_refused(verdicts, tiny_config, hostile_files):
    for text in HOSTILE_JSON.values():
        verdicts.run("run_pipeline", "--inline", "--config", tiny_config, "--payload", text, refused=True)
    for path in hostile_files.values():
        verdicts.run("run_pipeline", "--inline", "--config", tiny_config, "--file", path, refused=True)
        verdicts.run("run_pipeline", "--inline", "--config", path, refused=True)
        verdicts.run("run_pipeline", "--config", path, "--dry-run", refused=True)
    verdicts.assert_clean()
    assert rows() == (0, 0, 0)


def test_hostile_json_on_standard_input_is_refused_as_the_same_file_is(verdicts, tiny_config, hostile_files, monkeypatch):
    for name, path in hostile_files.items():
        if name in ("directory", "fifo", "loop"):
            continue  # not files one can pipe
        with open(path, "rb") as handle:
            data = handle.read()
        from_file = cli("run_pipeline", "--inline", "--config", tiny_config, "--file", path)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        from_stdin = verdicts.run("run_pipeline", "--inline", "--config", tiny_config, "--file", "-", refused=True)
        assert from_stdin.stderr == from_file.stderr.replace(path, "standard input"), name
    # No standard input at all (started with it closed).
    monkeypatch.setattr(sys, "stdin", None)
    result = verdicts.run("run_pipeline", "--inline", "--config", tiny_config, "--file", "-", refused=True)
    assert result.stderr == "CommandError: Cannot read payload file: standard input (closed)\n"
    verdicts.assert_clean()
    assert rows() == (0, 0, 0)


def test_hostile_text_in_every_run_pipeline_option(verdicts, tiny_config):
    PipelineDefinition.objects.create(name="tiny", config=TINY)
    base = ("run_pipeline", "--inline", "--config", tiny_config)
    for text in HOSTILE_TEXT:
        verdicts.run("run_pipeline", "--inline", "--definition", text, refused=True)
        verdicts.run("run_pipeline", "--inline", "--config", text, refused=True)
        verdicts.run("run_pipeline", "--inline", "--notify-driver", text, refused=True)
        verdicts.run(*base, "--payload", text, refused=True)
        verdicts.run(*base, "--file", text, refused=True)
        verdicts.run(*base, "--source", text)
        verdicts.run(*base, "--environment", text)
        verdicts.run(*base, "--trace-id", text)
        # --dry-run: an acceptable timeout must not launch a run with nobody to take it.
        timeout = ("run_pipeline", "--config", tiny_config, "--dry-run", "--wait", "--timeout", text)
        verdicts.run(*timeout, refused=text != "9" * 30)
        verdicts.run(*base, "--sample", "--source", text)
        host = ("run_pipeline", "--config", tiny_config, "--dry-run", "--host", text)
        verdicts.run(*host, refused=host_name(text) is None)
    verdicts.assert_clean()


def test_refused_labels_and_trace_ids_follow_one_rule_on_every_database(verdicts, tiny_config):
    base = ("run_pipeline", "--inline", "--config", tiny_config)
    for flag, bad, good in (
        ("--trace-id", ["x" * 65, "a b", "tab\tid", "\x1b[2J", "é", ""], ["x" * 64, "00-4bf92f3577b34da6-01", "a"]),
        ("--source", ["s" * 51, "new\nline", ""], ["s" * 50, "grafana", "my source"]),
        ("--environment", ["e" * 51, "\x07bell", ""], ["e" * 50, "production", "eu-west 1"]),
    ):
        for value in bad:
            verdicts.run(*base, flag, value, refused=True)
        for value in good:
            result = verdicts.run(*base, flag, value)
            assert result.exit_code == 0, (flag, value, result.stderr)
    verdicts.assert_clean()
    stored = PipelineRun.objects.values_list("trace_id", flat=True)
    assert "x" * 64 in stored and "00-4bf92f3577b34da6-01" in stored


def test_hostile_run_ids_and_timeouts_for_show_run_and_cancel_run(verdicts, tiny_config):
    assert cli("run_pipeline", "--inline", "--config", tiny_config).exit_code == 0
    run_id = str(PipelineRun.objects.get().pk)
    for text in [*HOSTILE_TEXT, "99999999999999999999999", str(2**63), "-5"]:
        verdicts.run("show_run", "--", text, refused=True)
        verdicts.run("cancel_run", "--", text, refused=True)
        verdicts.run("show_run", run_id, "--wait", "--timeout", text, refused=text != "9" * 30)
        verdicts.run("show_run", run_id, "--json", "--timeout", text, refused=text != "9" * 30)
        verdicts.run("recover_runs", "--grace", text, refused=text != "0")
        verdicts.run("broker", text, refused=True)
    verdicts.assert_clean()


def test_hostile_definition_files_are_refused_by_load_pipelines(verdicts, hostile_files, tmp_path):
    bad_names = tmp_path / "names"
    bad_names.mkdir()
    for name in ("with space", "x" * 101, "\x1b[2J", "ünïcode"):
        (bad_names / f"{name}.json").write_text(json.dumps(TINY))
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    for index, node_id in enumerate(["\x1b[2Jclear", "n" * 101, "new\nline"]):
        config = {"version": "1.0", "nodes": [{**TINY["nodes"][0], "id": node_id}]}
        (nodes / f"bad-node-{index}.json").write_text(json.dumps(config))
    folder = os.path.dirname(hostile_files["nan"])
    for directory in (folder, str(bad_names), str(nodes)):
        result = verdicts.run("load_pipelines", "--dir", directory, refused=True, report=True)
        assert result.stdout.endswith("0 loaded, " + str(len(os.listdir(directory))) + " refused\n")
    for text in HOSTILE_TEXT:
        verdicts.run("load_pipelines", "--dir", text, refused=True)
    verdicts.assert_clean()
    assert PipelineDefinition.objects.count() == 0


def test_definition_in_the_database_with_unstorable_values_is_refused_before_a_run(verdicts):
    # The admin or a script can store what the loader would refuse; the launcher checks again.
    deep: dict = {}
    for _ in range(MAX_DEPTH + 5):
        deep = {"d": deep}
    for index, config in enumerate(
        [
            {**TINY, "description": "x\x00y"},
            {**TINY, "tags": [deep]},
            {"version": "1.0", "nodes": [{**TINY["nodes"][0], "id": "\x1b]0;title\x07"}]},
        ]
    ):
        try:
            PipelineDefinition.objects.create(name=f"stored-{index}", config=config)
        except Exception:  # noqa: BLE001 - a database that refuses to store it is fine too
            continue
        verdicts.run("run_pipeline", "--inline", "--definition", f"stored-{index}", refused=True)
    verdicts.assert_clean()
    assert PipelineRun.objects.count() == 0


def test_escape_sequences_from_a_run_are_shown_escaped(tiny_config, tmp_path):
    # Text a remote service or an alert could carry ends up in outputs; the display escapes it.
    config = {
        "version": "1.0",
        "nodes": [{"id": "shape", "type": "transform", "config": {"mapping": {"t": "payload.title"}}}],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(config))
    title = "\x1b[2J\x1b[1;1Hall clear\r\u202e"
    result = cli("run_pipeline", "--inline", "--config", str(path), "--payload", json.dumps({"title": title}))
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "\u202e" not in result.stdout
    as_json = cli("show_run", str(PipelineRun.objects.get().pk), "--json")
    assert json.loads(as_json.stdout)["node_results"]["shape"]["output"]["t"] == title


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "args",
    [
        ["--payload", '{"a": NaN}'],
        ["--wait", "--timeout", "nan"],
        ["--trace-id", "\x1b[2J" + "t" * 70],
        ["--timeout", "abc", "--wait"],
    ],
    ids=["nan-payload", "nan-timeout", "escape-trace-id", "unparsable-timeout"],
)
def test_the_real_command_prints_one_line_and_stores_nothing(manage, tiny_config, args):
    result = manage("run_pipeline", "--config", tiny_config, *args)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "\x1b" not in result.stderr and "Traceback" not in result.stderr
    assert PipelineRun.objects.count() == 0


def test_every_hostile_text_pair_of_source_and_trace_id_stores_nothing_or_a_clean_run(verdicts, tiny_config):
    # A denser sweep of the two free-text options most often fed from other systems.
    sample = ["", "\x1b[2J", "x" * 65, "ok-id", "bad-utf8-\udcff"]
    for source, trace in itertools.product(sample, sample):
        verdicts.run("run_pipeline", "--inline", "--config", tiny_config, "--source", source, "--trace-id", trace)
    verdicts.assert_clean()
    for run in PipelineRun.objects.all():
        assert run.status == PipelineRun.Status.COMPLETED
        assert run.source == "ok-id" and run.trace_id == "ok-id"


WRONG_TYPES = [None, 7, "text", [], {"x": None}, [None]]


def test_alert_payloads_with_wrong_types_end_as_clean_runs(tmp_path):
    """Every top-level field of each source's sample alert, replaced by each wrong
    type: the ingest node reports what is wrong; no handler crashes."""
    from apps.alerts.services import alert_sample, alert_sources
    from apps.orchestration import engine, inputs, launch, launchrequest

    path = tmp_path / "ingest.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": [{"id": "ingest", "type": "ingest"}]}))
    resolved = inputs.definition_resolve(config_path=str(path))
    crashes = []
    for source in alert_sources():
        sample = alert_sample(source=source)
        for key, wrong in itertools.product(sample, WRONG_TYPES):
            run = launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=resolved, payload={**sample, key: wrong}, source=source))
            run = engine.run_execute(run_id=run.pk)
            stage_error = (run.result["node_results"]["ingest"].get("error") or "") if run.result else ""
            if not run.is_terminal or re.match(r"\w+(Error|Exception): ", stage_error):
                crashes.append(f"{source} {key}={wrong!r}: {run.status} {stage_error}")
    assert not crashes, "\n".join(crashes)


def test_a_failure_naming_hostile_text_is_one_escaped_line(tmp_path):
    config = {
        "version": "1.0",
        "nodes": [{"id": "shape", "type": "transform", "config": {"mapping": {"t": "payload.\x1b[2J\nforged"}}}],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(config))
    result = cli("run_pipeline", "--inline", "--config", str(path))
    assert result.exit_code == 1
    assert result.stderr == "CommandError: Pipeline failed: Node 'shape' failed: Path not found: payload.\\x1b[2J\\nforged\n"
    assert "Error: Path not found: payload.\\x1b[2J\\nforged" in result.stdout
    assert "\x1b" not in result.stdout
