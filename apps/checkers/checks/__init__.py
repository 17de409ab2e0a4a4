"""Every checker, imported so their registrations run."""
from apps.checkers.checks import cpu, disk, load, memory  # noqa: F401
