"""What the console's pages read and build besides the templates: the run
list's definition choices and a run's retries (real database)."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.console import pages
from apps.orchestration.models import PipelineDefinition
from tests.support import make_run

pytestmark = pytest.mark.django_db


def test_the_definition_choices_are_escaped_and_the_chosen_one_is_selected():
    html = str(pages.definition_options(names=["alpha", 'b"<x>&', "gamma"], chosen="gamma"))
    assert html == ('<option value="alpha">alpha</option>'
                    '<option value="b&quot;&lt;x&gt;&amp;">b&quot;&lt;x&gt;&amp;</option>'
                    '<option value="gamma" selected>gamma</option>')
    assert str(pages.definition_options(names=[], chosen="")) == ""


def test_the_runs_list_offers_every_stored_definition_with_the_filtered_one_selected():
    for name in ("zeta", "alpha", "mu"):
        make_run(name=name)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.create_superuser("root", password="pw"))
    page = client.get("/runs/?definition=mu").content.decode()
    select = re.search(r'<select name="definition">(.*?)</select>', page, re.S)[1]
    assert re.findall(r'<option value="([^"]*)"( selected)?>', select) == [
        ("", ""), ("alpha", ""), ("mu", " selected"), ("zeta", "")]
    assert PipelineDefinition.objects.count() == 3


def test_a_runs_retries_are_listed_newest_first_and_only_its_own():
    original, other = make_run(), make_run()
    retries = [make_run(retry_of=original, trigger="retry") for _ in range(3)]
    make_run(retry_of=other, trigger="retry")
    assert pages.run_retries(original) == [run.pk for run in reversed(retries)]
    assert pages.run_retries(retries[0]) == []
