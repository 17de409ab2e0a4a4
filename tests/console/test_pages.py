"""What the console's pages read and build besides the templates: the run
list's definition suggestions and a run's retries (real database)."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.console import pages
from apps.orchestration.models import PipelineDefinition
from tests.support import make_run

pytestmark = pytest.mark.django_db


def test_the_definition_filter_suggests_the_names_holding_what_was_typed(django_assert_num_queries):
    names = ["disk-full", "Disk_Slow", "memory", *(f"host-{number:02d}" for number in range(30))]
    PipelineDefinition.objects.bulk_create(PipelineDefinition(name=name, config={}) for name in names)
    with django_assert_num_queries(1):
        assert pages.definition_choices(" DISK ") == ["Disk_Slow", "disk-full"]
    assert pages.definition_choices("") == sorted(names)[:pages.DEFINITION_CHOICES]
    assert pages.definition_choices("host") == [f"host-{number:02d}" for number in range(20)]
    assert pages.definition_choices("nothing") == []
    with django_assert_num_queries(0):  # a text no name can hold is not looked up
        for typed in ("disk full", "a\x00b", "<b>", "x" * 101):
            assert pages.definition_choices(typed) == []


def test_the_runs_list_keeps_the_filtered_definition_and_lists_no_names_itself():
    for name in ("zeta", "alpha", "mu"):
        make_run(name=name)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.create_superuser("root", password="pw"))
    page = client.get("/runs/?definition=mu").content.decode()
    field = re.search(r'<input name="definition"[^>]*>', page)[0]
    assert 'value="mu"' in field and 'list="definition-names"' in field
    assert 'hx-get="/runs/definitions/"' in field
    assert re.search(r'<datalist id="definition-names"></datalist>', page)  # filled as one types
    assert "zeta" not in page and "alpha" not in page
    suggested = client.get("/runs/definitions/", {"definition": "A"}).content.decode()
    assert re.findall(r'<option value="([^"]*)"></option>', suggested) == ["alpha", "zeta"]
    assert PipelineDefinition.objects.count() == 3


def test_suggested_names_are_text_whatever_they_hold():
    PipelineDefinition.objects.create(name='b"<img src=x onerror=alert(1)>&', config={})
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.create_superuser("root", password="pw"))
    suggested = client.get("/runs/definitions/").content.decode()
    assert suggested.strip() == '<option value="b&quot;&lt;img src=x onerror=alert(1)&gt;&amp;"></option>'


def test_a_runs_retries_are_listed_newest_first_and_only_its_own():
    original, other = make_run(), make_run()
    retries = [make_run(retry_of=original, trigger="retry") for _ in range(3)]
    make_run(retry_of=other, trigger="retry")
    assert pages.run_retries(original) == [run.pk for run in reversed(retries)]
    assert pages.run_retries(retries[0]) == []
