from django.apps import AppConfig


class OrchestrationConfig(AppConfig):
    name = "apps.orchestration"
    label = "orchestration"
    verbose_name = "Pipeline orchestration"

    def ready(self):
        # Importing the package registers every node type.
        from apps.orchestration import nodes  # noqa: F401
