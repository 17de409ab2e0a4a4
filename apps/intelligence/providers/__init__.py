"""Every intelligence provider, imported so their registrations run."""
from apps.intelligence.providers import local, openai  # noqa: F401
