from django.apps import AppConfig


class CheckersConfig(AppConfig):
    name = "apps.checkers"
    label = "checkers"

    def ready(self):
        from apps.checkers import checks  # noqa: F401  (registers every checker)
