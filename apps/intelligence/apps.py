from django.apps import AppConfig


class IntelligenceConfig(AppConfig):
    name = "apps.intelligence"
    label = "intelligence"

    def ready(self):
        from apps.intelligence import providers  # noqa: F401  (registers every provider)
