"""cancel_run: cancel a queued run, or stop a running one before its next node
(with --force: stop the node being executed too)."""
from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.management.base import PipelineCommand, launch_refused
from apps.orchestration.rendering import render_cancelled
from apps.orchestration.run_actions import pipeline_run_cancel


class Command(PipelineCommand):
    help = (
        "Cancel a pipeline run by id. A running run finishes its current node and starts no other; "
        "with --force its current node is interrupted too."
    )

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, help="The run's id (the Run ID of run_pipeline).")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Also stop the node being executed: it is interrupted and recorded as failed "
            "('Interrupted: cancelled on request'); the worker goes on serving other runs.",
        )

    def handle(self, *args, **options):
        try:
            run = pipeline_run_cancel(run_id=options["run_id"], stop_node=options["force"])
        except LaunchError as exc:
            raise launch_refused(exc) from exc
        self.stdout.write(render_cancelled(run))
