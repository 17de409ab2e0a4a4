"""The "follow it" hint of a fire-and-forget launch (apps/orchestration/rendering.py):
the worker log it names and a grep that finds one run's lines and no other's."""
import json
import logging
import subprocess

import pytest

from apps.logcontext import RunContextFilter, run_context
from apps.logs import JsonFormatter, TextFormatter
from apps.orchestration.models import PipelineRun
from apps.orchestration.rendering import follow_hint

TRACE = "t.1"
# Trace ids that begin with, or look like, the one followed: their lines must not match.
OTHERS = ["t.12", "t.1-retry", "tx1", "t.1\"", "xt.1"]


def _hint_command(run: PipelineRun) -> str:
    line = follow_hint(run).splitlines()[1]
    assert line.startswith("Worker log: ")
    return line[len("Worker log: "):]


def test_hint_names_the_configured_worker_log(settings):
    settings.WORKER_LOG_PATH = "/var/log/pipelines/worker.log"
    settings.LOG_FORMAT = "text"
    hint = follow_hint(PipelineRun(pk=7, trace_id="abc"))
    assert hint == (
        "Follow it:  python manage.py show_run 7 --wait\n"
        "Worker log: grep -E ' trace_id=abc( |$)' /var/log/pipelines/worker.log"
    )


def test_hint_names_var_worker_log_only_when_it_exists(settings, tmp_path, monkeypatch):
    settings.WORKER_LOG_PATH = ""
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()
    monkeypatch.chdir(tmp_path)
    assert _hint_command(PipelineRun(pk=7, trace_id="abc")).endswith(" <worker log>")
    (settings.VAR_DIR / "worker.log").write_text("")
    assert _hint_command(PipelineRun(pk=7, trace_id="abc")).endswith(" var/worker.log")


def _write_log(path, formatter: logging.Formatter) -> None:
    """A worker log with lines of the followed run and of runs whose trace ids resemble it."""
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter)
    handler.addFilter(RunContextFilter())
    logger = logging.getLogger("tests.rendering.hint")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        for run_id, trace_id in [(1, TRACE), *enumerate(OTHERS, start=2)]:
            with run_context(run_id, trace_id):
                logger.info("event=run.start run_id=%s trace_id=%s", run_id, trace_id)
                logger.info("Task orchestration.execute_run[run-%s-0] succeeded", run_id)
                logger.info("event=run.cancel_requested trace_id=%s", trace_id)  # the id at the end of the message
        logger.info("no run here")
    finally:
        logger.removeHandler(handler)
        handler.close()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_hint_grep_finds_the_runs_lines_and_no_other_runs(settings, tmp_path, log_format):
    settings.LOG_FORMAT = log_format
    log = tmp_path / "worker.log"
    settings.WORKER_LOG_PATH = str(log)
    _write_log(log, TextFormatter() if log_format == "text" else JsonFormatter(json_ensure_ascii=True))
    command = _hint_command(PipelineRun(pk=1, trace_id=TRACE))
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = proc.stdout.splitlines()
    assert len(found) == 3, proc.stdout
    if log_format == "json":
        assert all(json.loads(line)["trace_id"] == TRACE for line in found)
    else:
        assert all(f" run_id=1 trace_id={TRACE} " in line for line in found)
