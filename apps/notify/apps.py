from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "apps.notify"
    label = "notify"

    def ready(self):
        from apps.notify import drivers  # noqa: F401  (registers every driver)
