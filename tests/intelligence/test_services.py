"""analysis_run and the intelligence node when a provider fails in a way it did not foresee."""
from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from apps.intelligence.base import AnalysisFailed, Provider, providers
from apps.intelligence.services import analysis_run
from apps.orchestration.nodes.base import NodeContext, NodeError
from apps.orchestration.nodes.intelligence import IntelligenceNode

CPU = {"name": "cpu", "status": "warning", "value": 91.0, "unit": "%", "message": "cpu 91.0% (warning)"}


class BrokenProvider(Provider):
    """A provider with a bug: its exception's text holds the key it used."""

    name = "broken"

    def analyze(self, *, incident, checks, config):
        raise KeyError("Bearer sk-br0ken-k3y-0123456789")


class OutOfTimeProvider(Provider):
    name = "out-of-time"

    def analyze(self, *, incident, checks, config):
        raise SoftTimeLimitExceeded()


@pytest.fixture
def broken(monkeypatch):
    monkeypatch.setitem(providers._items, "broken", BrokenProvider)


def test_an_unexpected_provider_error_is_named_by_its_class_only(broken, apps_log):
    with pytest.raises(AnalysisFailed) as failed:
        analysis_run(provider="broken", config={"provider": "broken"}, incident=None, checks=[CPU])
    assert str(failed.value) == "provider broken failed (KeyError)"
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    assert [r.getMessage() for r in apps_log.records] == ["Provider broken raised KeyError"]
    assert all(r.exc_info is None for r in apps_log.records)
    assert "sk-br0ken" not in apps_log.text


def test_the_intelligence_node_fails_cleanly_when_its_provider_breaks(broken):
    ctx = NodeContext(
        run_id=1, trace_id="t", pipeline="p", source="cli", environment="test", payload={},
        results={"metrics": {"type": "context", "output": {"checks": {"cpu": CPU}}}},
    )
    with pytest.raises(NodeError) as failed:
        IntelligenceNode().run({"provider": "broken"}, ctx)
    assert str(failed.value) == "Analysis failed: provider broken failed (KeyError)"
    assert failed.value.__suppress_context__  # a traceback of it would not show the provider's error


def test_the_runs_time_limit_passes_through_the_provider(monkeypatch):
    monkeypatch.setitem(providers._items, "out-of-time", OutOfTimeProvider)
    with pytest.raises(SoftTimeLimitExceeded):
        analysis_run(provider="out-of-time", config={}, incident=None, checks=[CPU])
