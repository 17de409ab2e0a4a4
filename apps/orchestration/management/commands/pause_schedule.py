"""pause_schedule: stop a definition's schedule from launching runs, until resume_schedule."""
from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.management.base import PipelineCommand, launch_refused
from apps.orchestration.schedule_actions import pipeline_schedule_pause
from apps.text import printable


class Command(PipelineCommand):
    help = (
        "Pause the schedule of a stored definition: beat launches no run of it until resume_schedule "
        "(load_pipelines keeps it paused)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="The definition's name.")

    def handle(self, *args, **options):
        try:
            changed = pipeline_schedule_pause(name=options["name"], paused=True)
        except LaunchError as exc:
            raise launch_refused(exc) from exc
        name = printable(options["name"])
        self.stdout.write(f"Schedule of {name} paused." if changed else f"Schedule of {name} is already paused.")
