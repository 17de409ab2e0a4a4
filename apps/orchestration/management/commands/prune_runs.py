"""prune_runs: delete old finished runs with their stages, in batches."""
from django.core.management.base import CommandError

from apps.orchestration.exit_codes import EXIT_BAD_INPUT
from apps.orchestration.management.base import PipelineCommand, duration_option
from apps.orchestration.models import PipelineRun
from apps.orchestration.pruning import pipeline_runs_prune


class Command(PipelineCommand):
    help = (
        "Delete finished runs (completed, failed, cancelled) created longer ago than --older-than, "
        "with their stages, a batch at a time; queued and running runs are never deleted. "
        "Without --status, the monitoring states (list_states) no run has refreshed since then go too."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="Age of the runs to delete: 30s, 15m, 2h, 7d.")
        parser.add_argument(
            "--status",
            nargs="+",
            action="extend",
            choices=[str(status) for status in PipelineRun.TERMINAL],
            help="Only runs with these statuses (default: every finished status).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args, **options):
        older_than = duration_option(options["older_than"], "--older-than")
        try:
            counts = pipeline_runs_prune(
                older_than=older_than, statuses=options["status"], dry_run=options["dry_run"]
            )
        except ValueError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from exc
        verb = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(
            f"{verb} {counts.runs} runs and {counts.stages} stages "
            f"(finished runs created before {counts.cutoff.isoformat(timespec='seconds')})."
        )
        if counts.states is not None:
            self.stdout.write(
                f"{verb} {counts.states} monitoring states and {counts.notices} notice records "
                "no run has refreshed since then."
            )
