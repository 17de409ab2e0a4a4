"""broker: status, start or stop the embedded broker."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workers.embedded import EmbeddedBrokerError, embedded_broker


class Command(BaseCommand):
    help = "Show, start or stop the embedded broker (used when CELERY_BROKER_URL is not set)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "start", "stop"])

    def handle(self, *args, **options):
        broker = embedded_broker()
        if not settings.CELERY_BROKER_IS_EMBEDDED:
            self.stdout.write("CELERY_BROKER_URL is set: the embedded broker is not in use.")
        action = options["action"]
        if action == "start":
            try:
                started = broker.ensure_running()
            except EmbeddedBrokerError as exc:
                raise CommandError(str(exc), returncode=1) from exc
            self.stdout.write(("started" if started else "already running") + f": {broker.socket_path}")
        elif action == "stop":
            stopped = broker.stop()
            self.stdout.write("stopped" if stopped else "not running")
        else:
            running = broker.is_running()
            pid = broker.pid() if running else None
            self.stdout.write(
                f"{'running' if running else 'not running'}: {broker.socket_path}"
                + (f" (pid {pid})" if pid else "")
            )
            if not running:
                raise CommandError("the embedded broker is not running", returncode=3)
