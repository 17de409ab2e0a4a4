"""Printing runs from management commands: the display, JSON, and exit codes."""
import json

from django.core.management.base import CommandError

from apps.orchestration import rendering, services, waiting
from apps.secrets import scrub
from apps.text import printable


class RunOutputMixin:
    """For commands that show a run (needs BaseCommand's stdout and style)."""

    def show_queued(self, run, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps({"run_id": run.pk, "trace_id": run.trace_id, "status": run.status}))
        else:
            self.stdout.write(rendering.render_queued(run))

    def show_existing(self, run, *, wait: bool, timeout: float | None, as_json: bool, follow: bool = False) -> None:
        """Show the run a launch found under its idempotency key (nothing new was launched)."""
        self.stderr.write(
            f"Run {run.pk} already exists for idempotency key {printable(run.idempotency_key)} "
            f"(status: {run.status}); no new run was launched."
        )
        if wait and not run.is_terminal:
            return self.wait_and_show(run.pk, timeout=timeout, as_json=as_json, follow=follow)
        if run.is_terminal:
            return self.show(run, as_json=as_json)
        self.show_queued(run, as_json=as_json)

    def wait_and_show(self, run_id: int, *, timeout: float | None, as_json: bool, follow: bool = False) -> None:
        """Wait for the run, then show it; leaves with the exit code of the contract.
        With ``follow``, a line on stderr as each node starts and ends."""
        progress = waiting.RunProgress(self.stderr.write) if follow else None
        try:
            outcome = waiting.pipeline_run_wait(
                run_id=run_id, timeout=timeout, notice=self.stderr.write, progress=progress
            )
        except KeyboardInterrupt:
            raise CommandError(rendering.render_detached(run_id), returncode=services.EXIT_WAIT_GAVE_UP)
        if outcome.reason == "finished":
            return self.show(outcome.run, as_json=as_json)
        if as_json:
            self.stdout.write(json.dumps(rendering.run_as_dict(outcome.run), indent=2))
        text = rendering.render_gave_up(outcome.run, reason=outcome.reason, timeout=timeout)
        raise CommandError(text, returncode=services.EXIT_WAIT_GAVE_UP)

    def show(self, run, *, as_json: bool) -> None:
        """Print the run and leave with its exit code."""
        code = services.exit_code_for(run)
        if as_json:
            self.stdout.write(json.dumps(rendering.run_as_dict(run), indent=2))
        else:
            head, last = rendering.render_result(run).rsplit("\n", 1)
            self.stdout.write(head + "\n")
            style = self.style.SUCCESS if code == services.EXIT_OK else self.style.ERROR
            self.stdout.write(style(last))
        if code == services.EXIT_WAIT_GAVE_UP:
            raise CommandError(f"Run {run.pk} has not finished (status: {run.status})", returncode=code)
        if code == services.EXIT_CANCELLED:
            raise CommandError(f"Pipeline cancelled: {printable(scrub(run.error or 'cancelled'))}", returncode=code)
        if code != services.EXIT_OK:
            raise CommandError(f"Pipeline failed: {printable(scrub(run.error))}", returncode=code)
