"""Prometheus metrics of runs, read from the database at scrape time.

Every value is computed from the PipelineRun and StageExecution rows when
``/metrics`` is scraped, with a few aggregate queries, so any web process
gives the same answer whichever worker executed the runs (a per-process
counter would only know its own process's runs).

The ``definition`` label is a stored definition's name, ``builtin`` for the
built-in pipeline, and ``config:<file name>`` for a run of a JSON file: the
file's name only, never its directory (paths can be long and say more than a
metric should). Definition names cannot hold ``:``, so the two never clash.

The duration histograms cover the runs and nodes that finished in the last
RUN_RETENTION_DAYS days (every stored one when retention is off): their
counts fall as runs leave that window, so read them as a distribution
(``histogram_quantile`` over the buckets), not with ``rate()``.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import PurePath

from django.conf import settings
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import Now
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from apps.orchestration.models import PipelineRun, StageExecution

# Upper bounds (seconds) of the histogram buckets; +Inf is added.
RUN_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
NODE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def definition_label(kind: str, origin: str) -> str:
    """The ``definition`` label of runs from ``origin`` (of ``origin_kind`` ``kind``)."""
    if kind == "config":
        return f"config:{PurePath(origin).name}"
    return origin


def _window() -> Q:
    """Rows finished inside the histograms' window (database time), as a filter on ``finished_at``."""
    days = settings.RUN_RETENTION_DAYS
    return Q(finished_at__gte=Now() - timedelta(days=days)) if days > 0 else Q()


def _bucket_counts(bounds: tuple[float, ...]) -> dict:
    """Aggregates counting the rows at or under each bound (``duration_ms`` is in milliseconds)."""
    return {f"le_{index}": Count("pk", filter=Q(duration_ms__lte=bound * 1000)) for index, bound in enumerate(bounds)}


def _histogram(family: HistogramMetricFamily, rows: list[dict], label_of, bounds: tuple[float, ...]) -> None:
    """Add one histogram per label set to ``family``; rows mapping to the same labels are summed."""
    merged: dict[tuple, list[float]] = defaultdict(lambda: [0.0] * (len(bounds) + 2))
    for row in rows:
        totals = merged[label_of(row)]
        for index in range(len(bounds)):
            totals[index] += row[f"le_{index}"]
        totals[-2] += row["count"]
        totals[-1] += (row["total_ms"] or 0) / 1000
    for labels, totals in sorted(merged.items()):
        buckets = [(_bound_text(bound), totals[index]) for index, bound in enumerate(bounds)]
        buckets.append(("+Inf", totals[-2]))
        family.add_metric(list(labels), buckets, totals[-1])


def _bound_text(bound: float) -> str:
    return repr(float(bound))


class RunsCollector:
    """A prometheus_client collector whose every collection reads the database.

    Raises DatabaseError (from ``collect``) when the database cannot be read."""

    def collect(self):
        yield self._runs()
        yield from self._queue()
        yield self._run_durations()
        yield self._node_durations()

    def describe(self):
        # Nothing is described up front: registering must not query the database.
        return []

    @staticmethod
    def _runs() -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "pipeline_runs", "Stored runs by definition, trigger and status.",
            labels=["definition", "trigger", "status"],
        )
        counts: dict[tuple, int] = defaultdict(int)
        rows = (
            PipelineRun.objects.order_by().values("origin_kind", "origin", "trigger", "status").annotate(n=Count("pk"))
        )
        for row in rows:
            counts[(definition_label(row["origin_kind"], row["origin"]), row["trigger"], row["status"])] += row["n"]
        for labels, count in sorted(counts.items()):
            family.add_metric(list(labels), count)
        return family

    @staticmethod
    def _queue():
        queued = PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED).aggregate(
            n=Count("pk"), oldest=Min("created_at"), now=Max(Now())
        )
        yield GaugeMetricFamily("pipeline_runs_queued", "Runs waiting for a worker.", value=queued["n"])
        # Measured on the database's clock, like every time a run records.
        age = (queued["now"] - queued["oldest"]).total_seconds() if queued["n"] else 0.0
        yield GaugeMetricFamily(
            "pipeline_oldest_queued_run_age_seconds",
            "Seconds since the oldest queued run was created (0 when none is queued).",
            value=max(age, 0.0),
        )

    @staticmethod
    def _run_durations() -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "pipeline_run_duration_seconds",
            "Durations of finished runs (finished within RUN_RETENTION_DAYS days) by definition and status.",
            labels=["definition", "status"],
        )
        rows = list(
            PipelineRun.objects.filter(_window(), duration_ms__isnull=False)
            .order_by()
            .values("origin_kind", "origin", "status")
            .annotate(count=Count("pk"), total_ms=Sum("duration_ms"), **_bucket_counts(RUN_BUCKETS))
        )
        _histogram(family, rows, lambda row: (definition_label(row["origin_kind"], row["origin"]), row["status"]),
                   RUN_BUCKETS)
        return family

    @staticmethod
    def _node_durations() -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "pipeline_node_duration_seconds",
            "Durations of node attempts (finished within RUN_RETENTION_DAYS days) by definition, node type "
            "and status.",
            labels=["definition", "node_type", "status"],
        )
        rows = list(
            StageExecution.objects.filter(_window(), duration_ms__isnull=False)
            .order_by()
            .values("run__origin_kind", "run__origin", "node_type", "status")
            .annotate(count=Count("pk"), total_ms=Sum("duration_ms"), **_bucket_counts(NODE_BUCKETS))
        )
        _histogram(
            family,
            rows,
            lambda row: (
                definition_label(row["run__origin_kind"], row["run__origin"]), row["node_type"], row["status"]
            ),
            NODE_BUCKETS,
        )
        return family
