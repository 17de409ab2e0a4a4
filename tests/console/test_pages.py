"""What the console's pages read besides the templates: a run's retries (real database)."""
from __future__ import annotations

import pytest

from apps.console import pages
from tests.support import make_run

pytestmark = pytest.mark.django_db


def test_a_runs_retries_are_listed_newest_first_and_only_its_own():
    original, other = make_run(), make_run()
    retries = [make_run(retry_of=original, trigger="retry") for _ in range(3)]
    make_run(retry_of=other, trigger="retry")
    assert pages.run_retries(original) == [run.pk for run in reversed(retries)]
    assert pages.run_retries(retries[0]) == []
