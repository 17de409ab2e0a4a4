"""cancel_run: cancel a queued run, or stop a running one before its next node."""
from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.management.base import PipelineCommand, launch_refused
from apps.orchestration.rendering import render_cancelled
from apps.orchestration.run_actions import pipeline_run_cancel


class Command(PipelineCommand):
    help = "Cancel a pipeline run by id. A running run finishes its current node and starts no other."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, help="The run's id (the Run ID of run_pipeline).")

    def handle(self, *args, **options):
        try:
            run = pipeline_run_cancel(run_id=options["run_id"])
        except LaunchError as exc:
            raise launch_refused(exc) from exc
        self.stdout.write(render_cancelled(run))
