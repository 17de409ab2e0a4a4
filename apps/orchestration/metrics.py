"""Prometheus metrics of runs, read from the database at scrape time.

The counters and histograms come from the rollup (RunTally, NodeTally) that
every run's end adds to in the transaction writing its terminal status
(apps/orchestration/rollup.py), never from the history: a scrape reads about
one small row per series however many runs are stored, pruning runs lowers nothing,
and any web process gives the same answer whichever worker ended the runs.
The queue gauges read only the queued runs, through an index of those alone;
the live workers per queue, beat's last tick age and the latest schedule
lateness read what the workers and beat record (apps/orchestration/presence.py,
the beat lease, the schedules' clocks): a few rows, or an index.

A scrape writes the text format straight from the rows read (``metrics_text``):
the same bytes prometheus_client writes for ``metrics_families`` (a test holds
them equal), in a fraction of the time with thousands of series.

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

from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Count, Max, Min, Q, QuerySet, Subquery
from django.db.models.functions import Now
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from apps.orchestration.models import (
    NODE_BUCKETS,
    RUN_BUCKETS,
    BeatLease,
    NodeTally,
    PipelineRun,
    RunTally,
    ScheduleState,
    WorkerQueue,
)
from apps.orchestration.rollup import rollup_sums

# name, type, HELP text of every family, in the order of the exposition.
RUNS = ("pipeline_runs", "counter", "Runs ended, by definition, trigger and terminal status.")
RUN_DURATIONS = ("pipeline_run_duration_seconds", "histogram",
                 "Durations of the runs that completed or failed, by definition and terminal status.")
NODES = ("pipeline_nodes", "counter", "Node attempts of the ended runs, by node type and attempt status.")
NODE_DURATIONS = ("pipeline_node_duration_seconds", "histogram",
                  "Durations of the node attempts of the ended runs, by node type and attempt status.")
QUEUED = ("pipeline_runs_queued", "gauge", "Runs waiting for a worker.")
OLDEST = ("pipeline_oldest_queued_run_age_seconds", "gauge",
          "Seconds since the oldest queued run was created (0 when none is queued).")
WORKERS = ("pipeline_workers_live", "gauge",
           "Live workers consuming each queue (from the presence each worker renews; 0 once they are gone).")
BEAT_AGE = ("pipeline_beat_last_tick_age_seconds", "gauge",
            "Seconds since beat's last pass renewed its lease (absent when no beat ever ran).")
LATENESS = ("pipeline_schedule_lateness_seconds", "gauge",
            "How late beat fired the most recent schedule ticks: fired minus due, in seconds "
            "(absent when no tick was fired yet).")


@dataclass
class Reading:
    """What one scrape read: the rollup's series summed over their shards (tuples of the
    labels then the counters, ordered by the labels) and the gauges' values."""

    definition: bool
    runs: list[tuple]  # ([definition,] trigger, status, count)
    # The runs that completed or failed, summed over the trigger (it rarely changes how long a run
    # takes: fewer series): ([definition,] status, count, timed, micros, le_0...). A cancelled run's
    # duration says when someone cancelled it, not how long its pipeline takes: it is counted, not
    # timed (which also keeps a scrape of hundreds of definitions under a megabyte).
    run_durations: list[tuple]
    nodes: list[tuple]  # (node_type, status, count, timed, micros, le_0...)
    queued: int = 0
    oldest_age: float = 0.0
    workers: list[tuple[str, int]] = field(default_factory=list)  # (queue, live workers), by queue
    beat_age: float | None = None
    lateness: float | None = None


def metrics_read() -> Reading:
    """Read every metric from the database now: the rollup (never the history), the queued runs
    through their own index, the live workers, beat's lease and the schedules' latest fire.
    Raises DatabaseError."""
    definition = bool(settings.METRICS_DEFINITION_LABEL)
    labels = ["definition"] if definition else []
    reading = Reading(
        definition=definition,
        runs=rollup_sums(model=RunTally, labels=[*labels, "trigger", "status"], counts_only=True),
        run_durations=rollup_sums(model=RunTally, labels=[*labels, "status"], skip_status=PipelineRun.Status.CANCELLED),
        nodes=rollup_sums(model=NodeTally, labels=["node_type", "status"]),
    )
    # COUNT(*) and the time of the oldest: both from the index of queued runs only.
    queued = PipelineRun.objects.filter(status=PipelineRun.Status.QUEUED).aggregate(
        n=Count("*"), oldest=Min("created_at"), now=Max(Now())
    )
    reading.queued = queued["n"]
    if queued["n"]:
        # Measured on the database's clock, like every time a run records.
        reading.oldest_age = max((queued["now"] - queued["oldest"]).total_seconds(), 0.0)
    reading.workers = list(
        WorkerQueue.objects.order_by("queue").values("queue")
        .annotate(live=Count("id", filter=Q(expires_at__gt=Now()))).values_list("queue", "live")
    )
    lease = BeatLease.objects.filter(name="beat").annotate(now=Now()).values_list("renewed_at", "now").first()
    if lease is not None and lease[0] is not None:
        reading.beat_age = max((lease[1] - lease[0]).total_seconds(), 0.0)
    fire = latest_fire().aggregate(fired=Max("last_fired_at"), due=Min("last_due_at"))
    if fire["fired"] is not None and fire["due"] is not None:
        reading.lateness = max((fire["fired"] - fire["due"]).total_seconds(), 0.0)
    return reading


def latest_fire() -> QuerySet[ScheduleState]:
    """The schedules beat's most recent fire fired (each carries that fire's time), found
    through the index of (last_fired_at, last_due_at): the earliest due among them is
    the latest lateness. Compared in SQL, as stored (SQLite keeps times as text)."""
    newest = ScheduleState.objects.filter(last_fired_at__isnull=False).order_by("-last_fired_at")
    return ScheduleState.objects.filter(last_fired_at=Subquery(newest.values("last_fired_at")[:1]))


# -- as prometheus_client's families ---------------------------------------------------


def _histogram(spec: tuple, label_names: list[str], rows: list[tuple], bounds: tuple) -> HistogramMetricFamily:
    """One histogram per row (its labels, then count, timed, micros and the buckets) with a timed one."""
    family = HistogramMetricFamily(spec[0], spec[2], labels=label_names)
    width = len(label_names)
    for row in rows:
        timed = row[width + 1]
        if not timed:
            continue
        buckets = [(repr(float(bound)), row[width + 3 + index]) for index, bound in enumerate(bounds)]
        buckets.append(("+Inf", timed))
        family.add_metric(list(row[:width]), buckets, row[width + 2] / 1_000_000)
    return family


def metrics_families(reading: Reading) -> list[Metric]:
    """``reading`` as prometheus_client's metric families (what ``metrics_text`` writes)."""
    definition = ["definition"] if reading.definition else []
    width = len(definition) + 2
    runs = CounterMetricFamily(RUNS[0], RUNS[2], labels=[*definition, "trigger", "status"])
    for row in reading.runs:
        runs.add_metric(list(row[:width]), row[width])
    nodes = CounterMetricFamily(NODES[0], NODES[2], labels=["type", "status"])
    for row in reading.nodes:
        nodes.add_metric(list(row[:2]), row[2])
    workers = GaugeMetricFamily(WORKERS[0], WORKERS[2], labels=["queue"])
    for queue, live in reading.workers:
        workers.add_metric([queue], live)
    beat = GaugeMetricFamily(BEAT_AGE[0], BEAT_AGE[2])
    if reading.beat_age is not None:
        beat.add_metric([], reading.beat_age)
    lateness = GaugeMetricFamily(LATENESS[0], LATENESS[2])
    if reading.lateness is not None:
        lateness.add_metric([], reading.lateness)
    return [
        runs,
        _histogram(RUN_DURATIONS, [*definition, "status"], reading.run_durations, RUN_BUCKETS),
        nodes,
        _histogram(NODE_DURATIONS, ["type", "status"], reading.nodes, NODE_BUCKETS),
        GaugeMetricFamily(QUEUED[0], QUEUED[2], value=reading.queued),
        GaugeMetricFamily(OLDEST[0], OLDEST[2], value=reading.oldest_age),
        workers, beat, lateness,
    ]


def metrics_collect() -> list[Metric]:
    """Every family of the run metrics, read from the database now. Raises DatabaseError."""
    return metrics_families(metrics_read())


# -- the text format, written directly -------------------------------------------------


def _escape(value: str) -> str:
    """A label value escaped for the text format (backslash, newline, double quote)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _number(value) -> str:
    """``value`` as prometheus_client writes a sample's value (Go's float formatting)."""
    if type(value) is int and 0 <= value < 1_000_000:  # the usual case, without a float's round trip
        return f"{value}.0"
    return floatToGoString(value)


def _head(lines: list[str], spec: tuple) -> None:
    name = spec[0] + "_total" if spec[1] == "counter" else spec[0]
    lines.append(f"# HELP {name} {spec[2]}\n# TYPE {name} {spec[1]}\n")


def _histogram_text(lines: list[str], spec: tuple, label_names: list[str], rows: list[tuple], bounds: tuple) -> None:
    """The samples of one histogram per row with a timed one, labels sorted by name as
    prometheus_client sorts them (``le`` goes between the others)."""
    _head(lines, spec)
    name = spec[0]
    before = sorted(label for label in label_names if label < "le")
    after = sorted(label for label in label_names if label > "le")
    order_before = [label_names.index(label) for label in before]
    order_after = [label_names.index(label) for label in after]
    les = [f'le="{float(bound)!r}"' for bound in bounds]
    width = len(label_names)
    for row in rows:
        timed = row[width + 1]
        if not timed:
            continue
        head = "".join(f'{label}="{_escape(row[i])}",' for label, i in zip(before, order_before, strict=True))
        tail = "".join(f',{label}="{_escape(row[i])}"' for label, i in zip(after, order_after, strict=True))
        for index, le in enumerate(les):
            lines.append(f"{name}_bucket{{{head}{le}{tail}}} {_number(row[width + 3 + index])}\n")
        timed_text = _number(timed)
        lines.append(f'{name}_bucket{{{head}le="+Inf"{tail}}} {timed_text}\n')
        plain = "{" + ",".join(
            f'{label}="{_escape(row[label_names.index(label)])}"' for label in sorted(label_names)
        ) + "}"
        total = floatToGoString(row[width + 2] / 1_000_000)
        lines.append(f"{name}_count{plain} {timed_text}\n{name}_sum{plain} {total}\n")


def metrics_text(reading: Reading) -> bytes:
    """``reading`` in Prometheus's text format 0.0.4: the bytes prometheus_client's
    generate_latest writes for ``metrics_families(reading)``, written straight from the rows
    (the families' objects and per-sample checks took most of a scrape with thousands of series)."""
    lines: list[str] = []
    definition = ["definition"] if reading.definition else []
    _head(lines, RUNS)
    if reading.definition:
        lines.extend(
            f'pipeline_runs_total{{definition="{_escape(row[0])}",status="{_escape(row[2])}",'
            f'trigger="{_escape(row[1])}"}} {_number(row[3])}\n' for row in reading.runs
        )
    else:
        lines.extend(
            f'pipeline_runs_total{{status="{_escape(row[1])}",trigger="{_escape(row[0])}"}} {_number(row[2])}\n'
            for row in reading.runs
        )
    _histogram_text(lines, RUN_DURATIONS, [*definition, "status"], reading.run_durations, RUN_BUCKETS)
    _head(lines, NODES)
    lines.extend(
        f'pipeline_nodes_total{{status="{_escape(row[1])}",type="{_escape(row[0])}"}} {_number(row[2])}\n'
        for row in reading.nodes
    )
    _histogram_text(lines, NODE_DURATIONS, ["type", "status"], reading.nodes, NODE_BUCKETS)
    _head(lines, QUEUED)
    lines.append(f"{QUEUED[0]} {_number(reading.queued)}\n")
    _head(lines, OLDEST)
    lines.append(f"{OLDEST[0]} {_number(reading.oldest_age)}\n")
    _head(lines, WORKERS)
    lines.extend(f'{WORKERS[0]}{{queue="{_escape(queue)}"}} {_number(live)}\n' for queue, live in reading.workers)
    for spec, value in ((BEAT_AGE, reading.beat_age), (LATENESS, reading.lateness)):
        _head(lines, spec)
        if value is not None:
            lines.append(f"{spec[0]} {_number(value)}\n")
    return "".join(lines).encode()
