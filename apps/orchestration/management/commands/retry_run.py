"""retry_run: launch a new run from a finished run's snapshot and payload,
optionally starting at its failed node, and show it as run_pipeline does."""
from django.core.management.base import CommandError

from apps.orchestration.exit_codes import exit_code_refused
from apps.orchestration.launch import pipeline_run_launch_inline
from apps.orchestration.launchrequest import AlreadyRetried, LaunchError
from apps.orchestration.management.base import PipelineCommand, launch_refused, seconds_option
from apps.orchestration.management.output import RunOutputMixin
from apps.orchestration.run_actions import pipeline_run_retry, retry_request


class Command(RunOutputMixin, PipelineCommand):
    help = (
        "Retry a finished pipeline run: a new run (trigger 'retry') of the same definition snapshot and "
        "payload, linked to the original. --from-failed reuses the outputs of the nodes that succeeded "
        "before the first failed node and starts there. A run retried already is refused (exit 2, naming its "
        "retry) unless --force. Exit codes as run_pipeline's."
    )

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, help="The id of the run to retry (it must have finished).")
        parser.add_argument(
            "--from-failed",
            action="store_true",
            help="Start at the original's first failed node; the nodes before it are not executed again.",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Retry the run even when it has a retry already (its notifications carry the same keys "
            "as the first run's, so receivers that deduplicate drop the repeats).",
        )
        parser.add_argument("--json", action="store_true", help="Print the run record as JSON.")
        how = parser.add_argument_group("execution")
        waits = how.add_mutually_exclusive_group()
        waits.add_argument("--wait", action="store_true", help="Wait for the worker to finish the run and show it.")
        waits.add_argument(
            "--follow",
            action="store_true",
            help="As --wait, and print a line on stderr as each node starts and ends.",
        )
        how.add_argument(
            "--timeout", type=float, help="With --wait: give up after this many seconds (exit 3; the run goes on)."
        )
        how.add_argument("--inline", action="store_true", help="Run in this process, without a broker or worker.")

    def handle(self, *args, **options):
        wait = options["wait"] or options["follow"]
        try:
            if options["timeout"] is not None and not wait:
                raise LaunchError("--timeout applies only with --wait")
            seconds_option(options["timeout"], "--timeout")
            if options["inline"] and wait:
                raise LaunchError("Cannot specify --inline with --wait or --follow (an inline run always waits)")
            run_id, from_failed, force = options["run_id"], options["from_failed"], options["force"]
            if options["inline"]:
                request = retry_request(run_id=run_id, from_failed=from_failed, force=force)
                return self.show(pipeline_run_launch_inline(request=request), as_json=options["json"])
            run = pipeline_run_retry(run_id=run_id, from_failed=from_failed, force=force)
        except AlreadyRetried as exc:
            raise CommandError(
                f"{exc}: pass --force to retry it again", returncode=exit_code_refused(exc.refusal)
            ) from exc
        except LaunchError as exc:
            raise launch_refused(exc) from exc
        if not wait:
            return self.show_queued(run, as_json=options["json"])
        self.wait_and_show(run.pk, timeout=options["timeout"], as_json=options["json"], follow=options["follow"])
