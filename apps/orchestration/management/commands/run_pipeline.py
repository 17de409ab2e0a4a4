"""run_pipeline: validate a pipeline definition, enqueue it for a worker (or run it
inline), and show what happened."""
import json
import sys

from apps.hostnames import AUTO
from apps.orchestration import rendering
from apps.orchestration.inputs import definition_check, definition_resolve, launch_check, payload_resolve
from apps.orchestration.launch import pipeline_run_launch_inline, pipeline_runs_launch
from apps.orchestration.launchrequest import LaunchError, LaunchRequest, RunExists
from apps.orchestration.management.base import PipelineCommand, launch_refused, seconds_option
from apps.orchestration.management.output import RunOutputMixin
from apps.orchestration.targeting import alert_target, launch_targets, target_choice
from apps.orchestration.workerenv import workers_env_warnings


def _binary(stream):
    """The byte stream under a text stream such as sys.stdin (None stays None: no standard input)."""
    return getattr(stream, "buffer", stream)


class Command(RunOutputMixin, PipelineCommand):
    help = (
        "Run a pipeline: a stored definition (--definition), a JSON file (--config), "
        "or the built-in ingest -> check -> analyze -> notify pipeline. The run is "
        "validated here and executed by a Celery worker (--inline: in this process). "
        "Exit codes: 0 completed or queued, 1 failed, 2 bad input, 3 gave up waiting, 4 cancelled."
    )

    # call_command("run_pipeline", "--file", "-", stdin=...) reads the payload from that stream.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        which = parser.add_argument_group("which pipeline")
        which.add_argument("--definition", help="Name of a PipelineDefinition in the database.")
        which.add_argument("--config", help="Path to a JSON file containing a pipeline definition.")
        which.add_argument(
            "--notify-driver",
            help="Notify driver of the built-in pipeline (default: console).",
        )
        data = parser.add_argument_group("payload (at most one)")
        data.add_argument("--payload", help="The payload as a JSON object.")
        data.add_argument(
            "--file",
            help="Path to a JSON file holding the payload; '-' reads it from standard input "
            "(either at most PAYLOAD_MAX_BYTES, default 1 MiB).",
        )
        data.add_argument("--sample", action="store_true", help="Use a sample alert for --source.")
        parser.add_argument("--source", default="cli", help="Alert source (default: cli, which autodetects).")
        parser.add_argument("--environment", default="development", help="Environment name (default: development).")
        parser.add_argument("--trace-id", help="Trace id for the run (default: a new UUID).")
        parser.add_argument(
            "--idempotency-key",
            help="Launch at most one run with this key: when a run of the same definition has it already, show "
            "(or wait for) that one; a key another definition's run has is refused (exit 2).",
        )
        parser.add_argument(
            "--host",
            help="Run on the workers serving this host (their MONITOR_HOST); 'auto': the host the alert names "
            "(else any worker); 'all': one run per host a live worker serves. Default: the definition's "
            "host or hosts, else any worker.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Validate and show the plan; run nothing.")
        parser.add_argument(
            "--json", action="store_true", help="Print the run record (with --dry-run: the plan) as JSON."
        )
        how = parser.add_argument_group("execution")
        how.add_argument("--wait", action="store_true", help="Wait for the worker to finish the run and show it.")
        how.add_argument(
            "--follow", action="store_true", help="As --wait, and print a line on stderr as each node starts and ends."
        )
        how.add_argument(
            "--timeout", type=float, help="With --wait: give up after this many seconds (exit 3; the run goes on)."
        )
        how.add_argument("--inline", action="store_true", help="Run in this process, without a broker or worker.")
        how.add_argument(
            "--logs",
            action="store_true",
            help="With --wait or --inline: also print the run's log lines after the display (with --follow: live, "
            "on stderr; with --json: as its 'logs' list).",
        )

    def handle(self, *args, **options):
        options["wait"] = options["wait"] or options["follow"]
        try:
            if options["timeout"] is not None and not options["wait"]:
                raise LaunchError("--timeout applies only with --wait")
            seconds_option(options["timeout"], "--timeout")
            if options["inline"] and options["wait"]:
                raise LaunchError("Cannot specify --inline with --wait or --follow (an inline run always waits)")
            if options["logs"] and not (options["wait"] or options["inline"]):
                raise LaunchError("--logs applies only with --wait, --follow or --inline")
            # An empty value given on purpose is an error, not "use the built-in pipeline".
            if options["definition"] is not None and options["config"] is not None:
                raise LaunchError("Cannot specify both --definition and --config")
            if options["notify_driver"] is not None and not (options["definition"] is None is options["config"]):
                raise LaunchError("--notify-driver applies only to the built-in pipeline")
            resolved = definition_resolve(
                name=options["definition"],
                config_path=options["config"],
                notify_driver=options["notify_driver"],
            )
            given = [flag for flag in ("--payload", "--file", "--sample") if options[flag[2:]]]
            if len(given) > 1:
                raise LaunchError(f"Cannot specify more than one of {', '.join(given)}")
            payload = payload_resolve(
                payload=options["payload"],
                payload_file=options["file"],
                stdin=_binary(options.get("stdin", sys.stdin)),
                sample=options["sample"],
                source=options["source"],
            )
            request = LaunchRequest(
                resolved=resolved,
                payload=payload,
                source=options["source"],
                environment=options["environment"],
                trace_id=options["trace_id"],
                idempotency_key=options["idempotency_key"],
            )
            if options["dry_run"]:
                # A launch checks these itself; the dry run checks what a launch would.
                launch_check(request=request)
                definition_check(resolved=resolved)
                choice: rendering.TargetChoice = target_choice(host=options["host"], config=resolved.config)
                if choice == AUTO:
                    choice = alert_target(config=resolved.config, payload=payload, source=options["source"])
                if options["json"]:
                    plan = rendering.dry_run_as_dict(
                        resolved=resolved, payload=payload, source=request.source, environment=request.environment,
                        target=choice,
                    )
                    self.stdout.write(json.dumps(plan, indent=2))
                else:
                    self.stdout.write(rendering.render_dry_run(
                        resolved=resolved, payload=payload, source=request.source, environment=request.environment,
                        target=choice,
                    ))
                # On stderr, after the plan: the plan on stdout is the same whatever the workers say.
                for line in workers_env_warnings(config=resolved.config, target=choice):
                    self.stderr.write(line)
                return
            if options["inline"]:
                if options["host"] is not None:
                    raise LaunchError("Cannot specify --inline with a target host (an inline run measures this host)")
                return self.show(
                    pipeline_run_launch_inline(request=request), as_json=options["json"], logs=options["logs"]
                )
            targets = launch_targets(
                host=options["host"], resolved=resolved, payload=payload, source=options["source"]
            )
            if targets.note:
                self.stderr.write(targets.note)
            if targets.fan_out and options["follow"]:
                raise LaunchError("--follow follows one run; with several hosts use --wait")
            if targets.fan_out and options["logs"]:
                raise LaunchError("--logs shows one run's lines; with several hosts use show_run ID --logs")
            runs = pipeline_runs_launch(request=request, targets=targets)
        except RunExists as exc:
            return self.show_existing(
                exc.run,
                wait=options["wait"], timeout=options["timeout"], as_json=options["json"], follow=options["follow"],
                logs=options["logs"],
            )
        except LaunchError as exc:
            raise launch_refused(exc) from exc

        if not options["wait"]:
            if not targets.live:
                self.warn_unserved(runs)
            if targets.fan_out:
                return self.show_queued_group(runs, as_json=options["json"])
            return self.show_queued(runs[0], as_json=options["json"])
        if targets.fan_out:
            return self.wait_and_show_group(runs, timeout=options["timeout"], as_json=options["json"])
        self.wait_and_show(
            runs[0].pk, timeout=options["timeout"], as_json=options["json"], follow=options["follow"],
            logs=options["logs"],
        )
