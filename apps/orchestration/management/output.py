"""Printing runs from management commands: the display, JSON, and exit codes."""
import json
import time
from collections.abc import Callable

from django.core.management.base import CommandError, OutputWrapper
from django.core.management.color import Style

from apps.orchestration import dispatch, rendering, waiting
from apps.orchestration.exit_codes import (
    EXIT_CANCELLED,
    EXIT_OK,
    EXIT_WAIT_GAVE_UP,
    exit_code_for,
    exit_code_worst,
)
from apps.orchestration.models import PipelineRun
from apps.orchestration.rendering import run_json
from apps.orchestration.selectors import node_attempt_latest, run_log_lines_list
from apps.secrets import scrub
from apps.text import printable


class RunProgress:
    """The lines ``--follow`` prints: each node's start and end once, whether
    heard as a progress event or found in the row, in the order they come.
    With ``logs_of`` (a run id: ``--logs``), also the run's log lines as they
    are stored: read when a node's end is heard and whenever the row is read
    (the engine writes them with those boundaries), each printed once, before
    the node line that follows them."""

    def __init__(self, say: Callable[[str], None], *, logs_of: int | None = None):
        self.say = say
        self.shown: set[tuple] = set()
        self.logs_of = logs_of
        self.after_seq = 0

    def logs(self) -> None:
        """Print the run's log lines stored since the last read (none without ``logs_of``)."""
        if self.logs_of is None:
            return
        for line in run_log_lines_list(run_id=self.logs_of, after_seq=self.after_seq):
            self.after_seq = line.seq
            self.say(rendering.render_log_line(line))

    def _once(self, key: tuple, line: str) -> None:
        if key not in self.shown:
            self.shown.add(key)
            self.say(line)

    def event(self, event: dict) -> None:
        """Report a progress event (see events.progress_publish)."""
        phase, node, attempt = event.get("phase"), event.get("node"), event.get("attempt") or 1
        if phase == "takeover":
            self._once(("takeover", event.get("worker")), rendering.render_progress(event))
        elif phase == "start":
            self._once(("start", node) if attempt == 1 else ("start", node, attempt), rendering.render_progress(event))
        elif phase == "end":
            if ("end", node, attempt) not in self.shown:
                self.logs()  # the node's lines are stored by the write its end was sent after
            self._once(("end", node, attempt), rendering.render_progress(event))

    def row(self, run: PipelineRun) -> None:
        """Report what the row shows: nodes ended, and the node being executed."""
        self.logs()
        result = run.result or {}
        entries = result.get("node_results") or {}
        for node_id in result.get("executed_nodes") or []:
            entry = entries.get(node_id) or {}
            self.event({
                "phase": "end", "node": node_id, "type": entry.get("type"), "attempt": entry.get("attempts"),
                "status": entry.get("status"), "duration_ms": entry.get("duration_ms"),
                "reused": entry.get("reused", False), "error": entry.get("error") or entry.get("reason"),
            })
        if run.status == PipelineRun.Status.RUNNING and run.current_node and run.current_node not in entries:
            node_type = next(
                (n.get("type") for n in run.config_snapshot.get("nodes") or [] if n.get("id") == run.current_node), None
            )
            # Its attempt is in its newest stage row (one read, only while catching up on a running
            # node), so the line reads as the live event's would, and the event is not shown again.
            attempt = node_attempt_latest(run_id=run.pk, node_id=run.current_node)
            self.event({"phase": "start", "node": run.current_node, "type": node_type, "attempt": attempt})

    def cancel_requested(self, *, stop_node: bool = False) -> None:
        self._once(("cancel", stop_node), rendering.render_progress({"phase": "cancel", "stop_node": stop_node}))



class RunOutputMixin:
    """For commands that show a run (needs BaseCommand's stdout and style)."""

    # BaseCommand's, which every command using this mixin is.
    stdout: OutputWrapper
    stderr: OutputWrapper
    style: Style

    def show_queued(self, run, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(rendering.queued_as_dict(run)))
        else:
            self.stdout.write(rendering.render_queued(run))

    def show_queued_group(self, runs, *, as_json: bool) -> None:
        """The runs one launch made, one per host."""
        if as_json:
            self.stdout.write(json.dumps([rendering.queued_as_dict(run) for run in runs], indent=2))
        else:
            self.stdout.write("\n\n".join(rendering.render_queued(run) for run in runs))

    def warn_unserved(self, runs) -> None:
        """A warning line for each host of ``runs`` that no live worker serves
        right now (asking the workers takes about a second)."""
        hosts = sorted({run.target_host for run in runs if run.target_host})
        live = dispatch.live_hosts(timeout=1.0) if hosts else None
        if live is None:
            return
        for host in hosts:
            if host not in live:
                self.stderr.write(rendering.render_unserved(host))

    def show_existing(
        self, run, *, wait: bool, timeout: float | None, as_json: bool, follow: bool = False, logs: bool = False
    ) -> None:
        """Show the run a launch found under its idempotency key (nothing new was launched)."""
        self.stderr.write(
            f"Run {run.pk} already exists for idempotency key {printable(run.idempotency_key)} "
            f"(status: {run.status}); no new run was launched."
        )
        if wait and not run.is_terminal:
            return self.wait_and_show(run.pk, timeout=timeout, as_json=as_json, follow=follow, logs=logs)
        if run.is_terminal:
            return self.show(run, as_json=as_json, logs=logs)
        self.show_queued(run, as_json=as_json)

    def _wait(
        self, run_id: int, *, timeout: float | None, follow: bool = False, logs: bool = False
    ) -> waiting.WaitOutcome:
        progress = RunProgress(self.stderr.write, logs_of=run_id if logs else None) if follow else None
        try:
            return waiting.pipeline_run_wait(
                run_id=run_id, timeout=timeout, notice=self.stderr.write, progress=progress
            )
        except KeyboardInterrupt:
            raise CommandError(rendering.render_detached(run_id), returncode=EXIT_WAIT_GAVE_UP) from None

    def wait_and_show(
        self, run_id: int, *, timeout: float | None, as_json: bool, follow: bool = False, logs: bool = False
    ) -> None:
        """Wait for the run, then show it; leaves with the exit code of the contract.
        With ``follow``, a line on stderr as each node starts and ends; with
        ``logs`` too, the run's log lines among them (and not again after the
        display); with ``logs`` alone, the lines after the display."""
        outcome = self._wait(run_id, timeout=timeout, follow=follow, logs=logs)
        if outcome.reason == "finished":
            return self.show(outcome.run, as_json=as_json, logs=logs, logs_shown=follow)
        if as_json:
            self.stdout.write(json.dumps(self._run_json(outcome.run, logs=logs), indent=2))
        elif logs and not follow:
            self.stdout.write(rendering.render_log_lines(run_log_lines_list(run_id=run_id)))
        text = rendering.render_gave_up(outcome.run, reason=outcome.reason, timeout=timeout)
        raise CommandError(text, returncode=EXIT_WAIT_GAVE_UP)

    @staticmethod
    def _run_json(run, *, logs: bool) -> dict:
        """``run_json``, with the run's kept log lines as ``logs`` when asked for."""
        data = run_json(run)
        if logs:
            data["logs"] = [rendering.log_line_as_dict(line) for line in run_log_lines_list(run_id=run.pk)]
        return data

    def show(self, run, *, as_json: bool, logs: bool = False, logs_shown: bool = False) -> None:
        """Print the run (with ``logs``, its kept log lines after the display,
        unless ``logs_shown`` already on stderr; in the JSON always) and leave
        with its exit code."""
        code = exit_code_for(run)
        if as_json:
            self.stdout.write(json.dumps(self._run_json(run, logs=logs), indent=2))
        else:
            head, last = rendering.render_result(run).rsplit("\n", 1)
            self.stdout.write(head + "\n")
            style = self.style.SUCCESS if code == EXIT_OK else self.style.ERROR
            self.stdout.write(style(last))
            if logs and not logs_shown:
                self.stdout.write("\n" + rendering.render_log_lines(run_log_lines_list(run_id=run.pk)))
        if code == EXIT_WAIT_GAVE_UP:
            raise CommandError(f"Run {run.pk} has not finished (status: {run.status})", returncode=code)
        if code == EXIT_CANCELLED:
            raise CommandError(f"Pipeline cancelled: {printable(scrub(run.error or 'cancelled'))}", returncode=code)
        if code != EXIT_OK:
            raise CommandError(f"Pipeline failed: {printable(scrub(run.error))}", returncode=code)

    def show_unfinished(self, run, *, as_json: bool, logs: bool = False) -> None:
        """Print a queued or running run as far as it has gone (with ``logs``,
        the log lines stored so far) and leave with exit 3 (the run goes on),
        without an error line."""
        if as_json:
            self.stdout.write(json.dumps(self._run_json(run, logs=logs), indent=2))
        else:
            self.stdout.write(rendering.render_unfinished(run))
            if logs:
                self.stdout.write("\n" + rendering.render_log_lines(run_log_lines_list(run_id=run.pk)))
        self.stdout.flush()
        raise SystemExit(EXIT_WAIT_GAVE_UP)

    def wait_and_show_group(self, runs, *, timeout: float | None, as_json: bool) -> None:
        """Wait for each of the runs one launch made (``timeout`` bounds the
        whole wait), show each in turn (``as_json``: a JSON array of them),
        and leave with the group's worst exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        shown, codes, troubles = [], [], []
        for run in runs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            outcome = self._wait(run.pk, timeout=left)
            run = outcome.run
            shown.append(run)
            if outcome.reason == "finished":
                code = exit_code_for(run)
                if not as_json:
                    self.stdout.write(rendering.render_result(run) + "\n")
                if code != EXIT_OK:
                    troubles.append(f"run {run.pk} ({run.target_host or 'shared queue'}) {run.status}")
            else:
                code = EXIT_WAIT_GAVE_UP
                self.stderr.write(rendering.render_gave_up(run, reason=outcome.reason, timeout=timeout))
                troubles.append(f"run {run.pk} ({run.target_host or 'shared queue'}) still {run.status}")
            codes.append(code)
        if as_json:
            self.stdout.write(json.dumps([run_json(run) for run in shown], indent=2))
        worst = exit_code_worst(codes)
        if worst != EXIT_OK:
            raise CommandError(
                f"{len(troubles)} of {len(shown)} runs did not complete: {'; '.join(troubles)}", returncode=worst
            )
