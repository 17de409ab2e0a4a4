"""Every intelligence provider, imported so their registrations run."""
from apps.intelligence.providers import local  # noqa: F401
