"""cancel_run: cancel a queued run, or stop a running one before its next node."""
from django.core.management.base import CommandError

from apps.orchestration import services
from apps.orchestration.management.base import PipelineCommand
from apps.orchestration.services import LaunchError
from apps.text import printable


class Command(PipelineCommand):
    help = "Cancel a pipeline run by id. A running run finishes its current node and starts no other."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, help="The run's id (the Run ID of run_pipeline).")

    def handle(self, *args, **options):
        try:
            run = services.pipeline_run_cancel(run_id=options["run_id"])
        except LaunchError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from exc
        if run.status == run.Status.CANCELLED:
            self.stdout.write(f"Run {run.pk} cancelled.")
        else:
            self.stdout.write(
                f"Cancellation of run {run.pk} requested: node '{printable(run.current_node)}' is not interrupted, "
                "and no node after it starts."
            )
