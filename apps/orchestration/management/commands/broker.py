"""broker: status, start or stop the embedded broker."""
from django.conf import settings
from django.core.management.base import CommandError

from apps.broker.embedded import EmbeddedBrokerError, embedded_broker
from apps.orchestration.management.base import PipelineCommand


class Command(PipelineCommand):
    help = "Show, start or stop the embedded broker (used when CELERY_BROKER_URL is not set)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "start", "stop"])

    def handle(self, *args, **options):
        broker = embedded_broker()
        if not settings.CELERY_BROKER_IS_EMBEDDED:
            self.stdout.write("CELERY_BROKER_URL is set: the embedded broker is not in use.")
        action = options["action"]
        try:
            if action == "start":
                started = broker.ensure_running()
                self.stdout.write(("started" if started else "already running") + f": {broker.socket_path}")
            elif action == "stop":
                self.stdout.write("stopped" if broker.stop() else "not running")
            else:
                # Running means a live server owns the directory; a busy or stopped one may not answer.
                pid = broker.pid()
                if pid is None:
                    self.stdout.write(f"not running: {broker.socket_path}")
                    raise CommandError("the embedded broker is not running", returncode=3)
                answering = "" if broker.answers() else ", not answering"
                self.stdout.write(f"running: {broker.socket_path} (pid {pid}{answering})")
        except EmbeddedBrokerError as exc:
            raise CommandError(str(exc), returncode=1) from exc
