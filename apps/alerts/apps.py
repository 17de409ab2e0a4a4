from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "apps.alerts"
    label = "alerts"

    def ready(self):
        from apps.alerts import parsers  # noqa: F401  (registers every parser)
