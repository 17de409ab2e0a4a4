"""An alert's run end to end: the intake records the alerts and stores the run, a real
worker completes it, and its ingest node reports the recorded alerts without counting
them again."""
import json

import pytest

from apps.alerts.models import Alert
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.support import wait_for

pytestmark = pytest.mark.subprocess

BODY = {"alerts": [
    {"name": "Disk almost full", "severity": "critical", "status": "firing", "labels": {"team": "storage"}},
    {"name": "Disk slow", "severity": "warning", "status": "firing", "labels": {"team": "storage"}},
]}


def test_a_worker_completes_an_alert_run_whose_ingest_reports_the_recorded_alerts(cli, worker):
    PipelineDefinition.objects.create(name="disk", config={
        "version": "1.0",
        "triggers": [{"alert": {"source": "generic", "match": 'alert.labels.team == "storage"'}}],
        "nodes": [
            {"id": "ingest", "type": "ingest", "next": "shape"},
            {"id": "shape", "type": "transform", "config": {"mapping": {"n": "ingest.created"}}},
        ],
    })
    receive = (
        "import json\n"
        "from apps.orchestration.intake import alerts_receive\n"
        f"intake = alerts_receive(source='generic', body=json.loads({json.dumps(json.dumps(BODY))}), trace_id='am-e2e')\n"
        "print(json.dumps({'runs': [r.pk for r in intake.runs], 'unmatched': intake.unmatched}))\n"
    )
    result = cli("shell", "-c", receive)
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["unmatched"] == 0
    [run_id] = answer["runs"]
    run = wait_for(
        lambda: PipelineRun.objects.filter(pk=run_id, status__in=PipelineRun.TERMINAL).first(),
        what=f"alert run {run_id} to end",
    )
    assert (run.status, run.trigger, run.source, run.trace_id) == ("completed", "alert", "generic", "am-e2e"), run.error
    ingest = StageExecution.objects.get(run=run, node_id="ingest").output
    alerts = list(Alert.objects.order_by("pk"))
    assert [a["id"] for a in ingest["alerts"]] == [a.pk for a in alerts]
    assert all(a["created"] is False for a in ingest["alerts"]) and ingest["recorded"] is True
    assert [a.occurrences for a in alerts] == [1, 1]  # recorded once, by the intake
    assert run.result["node_results"]["shape"]["output"] == {"n": 0}
    shown = cli("show_run", str(run.pk))
    assert "Alerts: 2 (recorded when received, resolved: 0)" in shown.stdout
