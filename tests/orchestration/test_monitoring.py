"""Monitoring state: the severity a run found, the state board its end writes, and
the notices notify nodes with notify_on decide and claim."""
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections

from apps.orchestration import lease
from apps.orchestration.models import MonitorNotice, MonitorState
from apps.orchestration.monitoring import (
    notice_claim,
    notice_decide,
    notice_release,
    run_severity,
    state_end_record,
)
from apps.orchestration.nodes.base import NodeContext

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SEVERITIES = ["ok", "info", "warning", "critical"]

# (heard before, found now) -> the notice with notify_on "change" (None: quiet); None before: nothing heard yet.
CHANGE = {
    (None, "ok"): None, (None, "info"): "", (None, "warning"): "problem", (None, "critical"): "problem",
    ("ok", "ok"): None, ("ok", "info"): "", ("ok", "warning"): "problem", ("ok", "critical"): "problem",
    ("info", "ok"): "", ("info", "info"): None, ("info", "warning"): "problem", ("info", "critical"): "problem",
    ("warning", "ok"): "resolved", ("warning", "info"): "resolved", ("warning", "warning"): None,
    ("warning", "critical"): "problem",
    ("critical", "ok"): "resolved", ("critical", "info"): "resolved", ("critical", "warning"): "problem",
    ("critical", "critical"): None,
}
# The same with notify_on "problem": no word on ok <-> info, and every run of a lasting problem reminds.
PROBLEM = {
    **CHANGE,
    (None, "info"): None, ("ok", "info"): None, ("info", "ok"): None,
    ("warning", "warning"): "reminder", ("critical", "critical"): "reminder",
}


def heard(severity: str, *, at: datetime = T0, run_id: int = 1) -> MonitorNotice:
    return MonitorNotice(definition="d", host="h", node_id="n", severity=severity, since=at, notified_at=at,
                         run_id=run_id, notice="problem")


@pytest.mark.parametrize("mode,table", [("change", CHANGE), ("problem", PROBLEM)])
@pytest.mark.parametrize("before", [None, *SEVERITIES])
@pytest.mark.parametrize("now_found", SEVERITIES)
def test_every_pair_of_severities_decides_its_notice(mode, table, before, now_found):
    previous = heard(before) if before else None
    decision = notice_decide(mode=mode, renotify_after=None, severity=now_found, previous=previous,
                             now=T0 + timedelta(minutes=5), run_id=2)
    assert decision.notice == table[(before, now_found)], decision.reason
    if decision.notice is not None and before:
        assert decision.previous == {"severity": before, "since": T0.isoformat()}


def test_a_run_that_found_no_severity_says_nothing():
    decision = notice_decide(mode="change", renotify_after=None, severity=None, previous=heard("warning"),
                             now=T0, run_id=2)
    assert decision.notice is None and decision.reason == "the run found no severity to notify about"


@pytest.mark.parametrize("mode", ["change", "problem"])
def test_renotify_after_reminds_a_lasting_problem_at_most_that_often(mode):
    def after(seconds):
        return notice_decide(mode=mode, renotify_after=3600, severity="critical", previous=heard("critical"),
                             now=T0 + timedelta(seconds=seconds), run_id=9).notice

    assert after(60) is None
    assert after(3599) is None
    assert after(3600) == "reminder"
    assert after(86400) == "reminder"


def test_a_claim_made_by_an_earlier_delivery_of_the_same_run_is_sent_again():
    previous = heard("warning", run_id=7)
    previous.previous_severity, previous.previous_since = "ok", T0 - timedelta(hours=1)
    decision = notice_decide(mode="change", renotify_after=None, severity="warning", previous=previous,
                             now=T0, run_id=7)
    assert decision.notice == "problem"
    assert decision.previous == {"severity": "ok", "since": (T0 - timedelta(hours=1)).isoformat()}


def test_run_severity_is_the_analysis_else_the_worst_check():
    checks = {"type": "context", "output": {"checks": {"a": {"name": "a", "status": "warning"},
                                                       "b": {"name": "b", "status": "critical"}}}}
    assert run_severity({"m": checks}) == "critical"
    assert run_severity({"m": checks, "x": {"type": "intelligence", "output": {"severity": "info"}}}) == "info"
    assert run_severity({"t": {"type": "transform", "output": {}}}) is None


def context(run_id: int, *, host: str = "web-01", node_id: str = "notify", now: datetime = T0) -> NodeContext:
    ctx = NodeContext(run_id=run_id, trace_id="t", pipeline="watch", source="cli", environment="test", payload={},
                      node_id=node_id, target_host=host, now=lambda: now)
    return ctx


@pytest.mark.django_db
def test_a_claim_moves_the_notice_and_a_second_run_finding_the_same_stays_quiet():
    first = notice_claim(ctx=context(1), severity="warning", mode="change", renotify_after=None)
    assert first.notice == "problem" and first.claim is not None
    second = notice_claim(ctx=context(2), severity="warning", mode="change", renotify_after=None)
    assert second.notice is None
    row = MonitorNotice.objects.get(definition="watch", host="web-01", node_id="notify")
    assert (row.severity, row.run_id, row.version) == ("warning", 1, 1)
    resolved = notice_claim(ctx=context(3, now=T0 + timedelta(minutes=3)), severity="ok", mode="change",
                            renotify_after=None)
    assert resolved.notice == "resolved" and resolved.previous == {"severity": "warning", "since": T0.isoformat()}
    row.refresh_from_db()
    assert (row.severity, row.run_id, row.version, row.previous_severity) == ("ok", 3, 2, "warning")


@pytest.mark.django_db
def test_notices_are_kept_per_host_and_per_notify_node():
    assert notice_claim(ctx=context(1), severity="warning", mode="change", renotify_after=None).notice == "problem"
    assert notice_claim(ctx=context(1, host="web-02"), severity="warning", mode="change",
                        renotify_after=None).notice == "problem"
    assert notice_claim(ctx=context(1, node_id="page"), severity="warning", mode="change",
                        renotify_after=None).notice == "problem"


@pytest.mark.django_db
def test_a_released_claim_leaves_the_notice_as_it_was_for_the_next_run():
    notice_claim(ctx=context(1), severity="warning", mode="change", renotify_after=None)
    failed = notice_claim(ctx=context(2), severity="critical", mode="change", renotify_after=None)
    assert failed.notice == "problem"
    notice_release(failed)
    row = MonitorNotice.objects.get()
    assert (row.severity, row.run_id) == ("warning", 1)
    assert notice_claim(ctx=context(3), severity="critical", mode="change", renotify_after=None).notice == "problem"
    # A first claim released is gone: the next run is the first again.
    MonitorNotice.objects.all().delete()
    first = notice_claim(ctx=context(4), severity="warning", mode="change", renotify_after=None)
    notice_release(first)
    assert not MonitorNotice.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("found", [("warning", "warning"), ("ok", "warning")])
def test_two_runs_deciding_at_once_decide_the_change_once(found):
    """Two threads, each with its own connection, claim at the same moment: of two runs
    finding the same problem one speaks; of a problem and an ok the one that
    claims first decides what the other is compared with. Never two notices
    of one change, never a change left untold."""
    if connection.vendor == "sqlite" and "memory" in str(connection.settings_dict["NAME"]):
        pytest.skip("an in-memory SQLite database is not shared between connections")
    barrier, decisions = threading.Barrier(2, timeout=60), {}

    def claim(run_id: int, severity: str):
        try:
            barrier.wait()
            decisions[run_id] = notice_claim(ctx=context(run_id), severity=severity, mode="change",
                                             renotify_after=None)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(run_id, severity)) for run_id, severity in
               zip((1, 2), found, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(decisions) == 2
    notices = {run_id: d.notice for run_id, d in decisions.items()}
    row = MonitorNotice.objects.get()
    if found == ("warning", "warning"):
        assert sorted(notices.values(), key=str) == [None, "problem"], notices
    else:
        # The row ends at what the last claimer found, and each notice told a change from what was heard.
        assert notices[2] == "problem"
        assert notices[1] in (None, "resolved")
        assert row.severity == ("ok" if notices[1] == "resolved" else "warning")


@pytest.mark.django_db
def test_state_since_moves_only_when_the_severity_changes():
    def end(run_id, severity, minutes, notified=False):
        state_end_record(definition="watch", host="web-01", severity=severity, run_id=run_id,
                         now=T0 + timedelta(minutes=minutes), notified=notified)
        return MonitorState.objects.get(definition="watch", host="web-01")

    state = end(1, "ok", 0)
    assert (state.severity, state.since, state.last_notified_at) == ("ok", T0, None)
    state = end(2, "warning", 1, notified=True)
    assert (state.severity, state.since, state.last_run_id) == ("warning", T0 + timedelta(minutes=1), 2)
    assert state.last_notified_at == T0 + timedelta(minutes=1)
    state = end(3, "warning", 2)
    assert state.since == T0 + timedelta(minutes=1) and state.last_run_at == T0 + timedelta(minutes=2)
    assert state.last_notified_at == T0 + timedelta(minutes=1)
    state = end(4, "ok", 3)
    assert (state.severity, state.since) == ("ok", T0 + timedelta(minutes=3))


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_lost_its_run_cannot_move_the_state():
    from tests.support import make_run

    run = make_run(name="watch", status="running", claimed_by="someone-else")
    stale = lease.Lease(run.pk, run.trace_id, "stale-token", lease.DbClock(T0))
    called = []
    with pytest.raises(lease.LeaseLost):
        stale.write(run_fields={"status": "completed"}, durable=True, on_end=lambda: called.append(1))
    assert called == [] and not MonitorState.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_runs_ending_at_once_on_a_new_host_leave_one_state_row():
    """Both ends find no row and insert: the second insert's conflict turns into an update
    inside its end transaction, which goes on and commits."""
    from django.db import transaction

    barrier, errors = threading.Barrier(2, timeout=60), []

    def end(run_id: int, severity: str):
        try:
            barrier.wait()
            with transaction.atomic():
                state_end_record(definition="watch", host="new-host", severity=severity, run_id=run_id,
                                 now=T0 + timedelta(seconds=run_id), notified=False)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=end, args=(run_id, severity)) for run_id, severity in ((1, "ok"), (2, "warning"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    state = MonitorState.objects.get(definition="watch", host="new-host")
    assert state.last_run_id in (1, 2)
    assert state.severity == {1: "ok", 2: "warning"}[state.last_run_id]
