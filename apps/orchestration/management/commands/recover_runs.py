"""recover_runs: one recovery sweep, as the workers run it periodically."""
from django.core.management.base import CommandError
from django.db import DatabaseError

from apps.orchestration.management.base import PipelineCommand, seconds_option
from apps.orchestration.recovery import runs_recover


class Command(PipelineCommand):
    help = (
        "Re-send every run that should be executing and has no message: queued runs whose "
        "message was lost, and running runs whose worker stopped renewing its lease."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help="Seconds a run must have gone without a message (default: RUN_RECOVERY_GRACE_SECONDS).",
        )

    def handle(self, *args, **options):
        grace = seconds_option(options["grace"], "--grace", zero=True)
        try:
            recovered = runs_recover(grace_seconds=grace)
        except DatabaseError as exc:
            raise CommandError(f"Cannot read the runs: {type(exc).__name__}: {exc}".strip(), returncode=1) from exc
        for item in recovered:
            self.stdout.write(f"re-sent run {item.run_id} (trace id {item.trace_id}): {item.reason.replace('_', ' ')}")
        self.stdout.write(f"{len(recovered)} run(s) re-sent")
