"""Settings read from the environment refuse values outside their range at start, naming the variable."""
from __future__ import annotations

import os

import pytest

from tests.support import manage_py


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("LOG_FORMAT", "xml", "Must be one of: text, json."),
        ("RUN_LEASE_SECONDS", "0", "Must be greater than 0."),
        ("RUN_RECOVERY_GRACE_SECONDS", "-1", "Must be greater than or equal to 0."),
        ("RUN_RETENTION_DAYS", "-3", "Must be greater than or equal to 0."),
        ("DEFINITION_MAX_BYTES", "0", "Must be greater than 0."),
    ],
)
def test_a_setting_out_of_its_range_stops_the_process_with_its_name(name, value, said):
    result = manage_py("check", env={**os.environ, name: value})
    assert result.exit_code != 0
    assert f'Environment variable "{name}" invalid: [\'{said}\']' in result.stderr


def test_the_defaults_pass():
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "RUN_LEASE_SECONDS", "RUN_RETENTION_DAYS")}
    assert manage_py("check", env=env).exit_code == 0
