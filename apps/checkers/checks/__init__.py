"""Every checker, imported so their registrations run."""
from apps.checkers.checks import cpu, disk, load, memory, network, processes, swap  # noqa: F401
