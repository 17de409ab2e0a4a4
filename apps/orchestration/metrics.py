"""Prometheus metrics of runs, read from the database at scrape time.

The counters and histograms come from the rollup (RunTally, NodeTally) that
every run's end adds to in the transaction writing its terminal status
(apps/orchestration/rollup.py), never from the history: a scrape reads a few
hundred small rows however many runs are stored, pruning runs lowers nothing,
and any web process gives the same answer whichever worker ended the runs.
The queue gauges read only the queued runs, through an index of those alone.

The ``definition`` label is a stored definition's name, ``builtin`` for the
built-in pipeline, and ``config:<file name>`` for a run of a JSON file: the
file's name only, never its directory. Definition names cannot hold ``:``, so
the two never clash. METRICS_DEFINITION_LABEL=0 leaves the label out (the
series are then summed over definitions), for a bounded number of series
whatever the number of definitions.

Counted from the rollup's creation on: runs that ended before it are in no
counter (Prometheus reads that as a counter reset).
"""
from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Max, Min, Sum
from django.db.models.functions import Now
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from apps.orchestration.models import NODE_BUCKETS, RUN_BUCKETS, NodeTally, PipelineRun, RunTally

_BUCKET_COLUMNS = tuple(f"le_{index}" for index in range(len(RUN_BUCKETS)))
_COUNTERS = ("count", "timed", "seconds", *_BUCKET_COLUMNS)
_SUMS = tuple(f"sum_{name}" for name in _COUNTERS)


def _sums(model: type[RunTally] | type[NodeTally], labels: list[str]) -> list[dict]:
    """``model``'s counters summed per value of ``labels`` (over the shards and the
    labels left out), ordered by the labels: one query over the small rollup."""
    return list(
        model.objects.order_by(*labels).values(*labels).annotate(**{f"sum_{name}": Sum(name) for name in _COUNTERS})
    )


def _histogram(family: HistogramMetricFamily, rows: list[dict], labels: list[str], bounds: tuple) -> None:
    """Add one histogram per row (its ``labels``' values) with a timed run in it."""
    for row in rows:
        if not row["sum_timed"]:
            continue
        pairs = zip(bounds, _BUCKET_COLUMNS, strict=True)
        buckets = [(repr(float(bound)), row[f"sum_{column}"]) for bound, column in pairs]
        buckets.append(("+Inf", row["sum_timed"]))
        family.add_metric([row[label] for label in labels], buckets, row["sum_seconds"])


class RunsCollector:
    """A prometheus_client collector whose every collection reads the database
    (three queries, none over the history).

    Raises DatabaseError (from ``collect``) when the database cannot be read."""

    def collect(self):
        definition = ["definition"] if settings.METRICS_DEFINITION_LABEL else []
        rows = _sums(RunTally, [*definition, "trigger", "status"])
        family = CounterMetricFamily(
            "pipeline_runs", "Runs ended, by definition, trigger and terminal status.",
            labels=[*definition, "trigger", "status"],
        )
        for row in rows:
            family.add_metric([row[label] for label in [*definition, "trigger", "status"]], row["sum_count"])
        yield family
        # The trigger rarely changes how long a run takes: summed over it, for fewer series.
        merged: dict[tuple, dict] = {}
        for row in rows:
            key = tuple(row[label] for label in [*definition, "status"])
            into = merged.get(key)
            if into is None:
                merged[key] = dict(row)
            else:
                for name in _SUMS:
                    into[name] += row[name]
        durations = HistogramMetricFamily(
            "pipeline_run_duration_seconds",
            "Durations of the ended runs that started, by definition and terminal status.",
            labels=[*definition, "status"],
        )
        _histogram(durations, [merged[key] for key in sorted(merged)], [*definition, "status"], RUN_BUCKETS)
        yield durations
        yield from self._nodes()
        yield from self._queue()

    def describe(self):
        # Nothing is described up front: registering must not query the database.
        return []

    @staticmethod
    def _nodes():
        rows = _sums(NodeTally, ["node_type", "status"])
        family = CounterMetricFamily(
            "pipeline_nodes", "Node attempts of the ended runs, by node type and attempt status.",
            labels=["type", "status"],
        )
        for row in rows:
            family.add_metric([row["node_type"], row["status"]], row["sum_count"])
        yield family
        durations = HistogramMetricFamily(
            "pipeline_node_duration_seconds", "Durations of the node attempts of the ended runs, by node type "
            "and attempt status.", labels=["type", "status"],
        )
        _histogram(durations, rows, ["node_type", "status"], NODE_BUCKETS)
        yield durations

    @staticmethod
    def _queue():
        # COUNT(*) and the time of the oldest: both from the index of queued runs only.
        queued = PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED).aggregate(
            n=Count("*"), oldest=Min("created_at"), now=Max(Now())
        )
        yield GaugeMetricFamily("pipeline_runs_queued", "Runs waiting for a worker.", value=queued["n"])
        # Measured on the database's clock, like every time a run records.
        age = (queued["now"] - queued["oldest"]).total_seconds() if queued["n"] else 0.0
        yield GaugeMetricFamily(
            "pipeline_oldest_queued_run_age_seconds",
            "Seconds since the oldest queued run was created (0 when none is queued).",
            value=max(age, 0.0),
        )


def exposition(families) -> bytes:
    """``families`` (prometheus_client Metric objects) in Prometheus's text format 0.0.4,
    as prometheus_client's generate_latest writes them, without its per-sample checks
    for names and label names (ours are fixed and valid): those took more than half of
    a scrape's time with a few thousand series."""
    lines: list[str] = []
    for family in families:
        name = family.name + "_total" if family.type == "counter" else family.name
        help_text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(sample.labels.items()))
                lines.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}\n")
            else:
                lines.append(f"{sample.name} {floatToGoString(sample.value)}\n")
    return "".join(lines).encode()


def _escape(value: str) -> str:
    """A label value escaped for the text format (backslash, newline, double quote)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def metrics_collect() -> list[Metric]:
    """Every family of the run metrics, read from the database now. Raises DatabaseError."""
    return list(RunsCollector().collect())
