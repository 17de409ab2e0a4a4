"""The exit codes of the commands, kept in apps.orchestration.exit_codes (the
API reports them in a run's record too); named here as well for the commands."""
from apps.orchestration.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_WAIT_GAVE_UP,
    exit_code_for,
    exit_code_refused,
    exit_code_worst,
)

__all__ = [
    "EXIT_BAD_INPUT", "EXIT_CANCELLED", "EXIT_FAILED", "EXIT_OK", "EXIT_WAIT_GAVE_UP",
    "exit_code_for", "exit_code_refused", "exit_code_worst",
]
