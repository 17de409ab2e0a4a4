"""resume_schedule: let a paused schedule launch runs again."""
from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.management.base import PipelineCommand, launch_refused
from apps.orchestration.schedule_actions import pipeline_schedule_pause
from apps.text import printable


class Command(PipelineCommand):
    help = "Resume the paused schedule of a stored definition: beat launches its runs again from its next due time."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The definition's name.")

    def handle(self, *args, **options):
        try:
            changed = pipeline_schedule_pause(name=options["name"], paused=False)
        except LaunchError as exc:
            raise launch_refused(exc) from exc
        name = printable(options["name"])
        self.stdout.write(f"Schedule of {name} resumed." if changed else f"Schedule of {name} is not paused.")
