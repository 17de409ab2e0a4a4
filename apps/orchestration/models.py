"""Pipeline definitions, the runs made from them, and one row per node executed."""
from datetime import datetime

from django.db import models
from django.db.models import Q


class PipelineDefinition(models.Model):
    name = models.SlugField(max_length=100, unique=True, help_text="Name used with --definition.")
    description = models.TextField(blank=True, default="")
    version = models.CharField(max_length=20, default="1.0", help_text="Definition format version.")
    config = models.JSONField(help_text="The definition itself: version, defaults and nodes.")
    tags = models.JSONField(default=list, blank=True, help_text="Free-form labels.")
    is_active = models.BooleanField(default=True, help_text="Inactive definitions cannot be run.")
    schedule_paused = models.BooleanField(
        default=False,
        help_text="Its schedule is paused (pause_schedule): load_pipelines keeps its PeriodicTask disabled.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class PipelineRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Trigger(models.TextChoices):
        CLI = "cli", "Command line"
        SCHEDULE = "schedule", "Schedule"
        RETRY = "retry", "Retry"
        ADMIN = "admin", "Admin"
        API = "api", "Program"
        ALERT = "alert", "Alert"
        CONSOLE = "console", "Console"

    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
    ACTIVE = (Status.QUEUED, Status.RUNNING)

    # Not fields: set on an instance by the code that read or executed it.
    # The database's time when the run store read this row (store.run_read and the claim); None otherwise.
    db_now: datetime | None = None
    # Set by engine.run_execute on a run it executed: True when that call recorded the run's end,
    # False when it lost the run on the way; None on a run it did not execute.
    ended_here: bool | None = None
    # Set by run_actions.pipeline_run_cancel: True when the run had been cancelled before that call.
    already_cancelled: bool | None = None

    trace_id = models.CharField(max_length=64, help_text="Correlates logs of one run.")
    definition = models.ForeignKey(
        PipelineDefinition,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The stored definition this run came from, if any.",
    )
    definition_name = models.CharField(max_length=100, blank=True, default="")
    origin = models.CharField(
        max_length=500,
        help_text="Where the definition came from: its name, a config file path, or 'builtin'.",
    )
    origin_kind = models.CharField(
        max_length=20,
        choices=[("definition", "Definition"), ("config", "Config file"), ("builtin", "Built-in")],
        default="definition",
    )
    config_snapshot = models.JSONField(help_text="The definition as it was when the run was created.")
    trigger = models.CharField(
        max_length=20, choices=Trigger.choices, default=Trigger.CLI,
        help_text="What launched the run: the command line, a schedule, a retry...",
    )
    idempotency_key = models.CharField(
        max_length=200, null=True, blank=True,
        help_text="A launch with a key that a run already has creates nothing (a schedule's tick, --idempotency-key).",
    )
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        help_text="The run this one retries (retry_run), if any.",
    )
    retry_root = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="For a retry: the id of the first run of its retry chain (for a retry of a retry of run 7: 7). "
        "Its notify nodes key their deliveries with it, so a receiver drops what that run sent already. "
        "A number, not a link: pruning that run changes no key.",
    )
    reused_results = models.JSONField(
        default=dict,
        blank=True,
        help_text="For a retry from the failed node: the original run's node_results entries of the nodes "
        "that are reused instead of executed again (copied, so pruning the original changes nothing).",
    )
    target_host = models.CharField(
        max_length=100, blank=True, default="",
        help_text="The host the run measures: only workers serving this host (MONITOR_HOST) take it. "
        "Empty: any worker, from the shared queue.",
    )
    group_id = models.UUIDField(
        null=True, blank=True, db_index=True,
        help_text="Shared by the runs one launch made, one per host (--host all, a definition's hosts).",
    )
    source = models.CharField(max_length=50, default="cli", help_text="Alert source / launcher.")
    environment = models.CharField(max_length=50, default="development")
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    current_node = models.CharField(max_length=100, blank=True, default="")
    result = models.JSONField(default=dict, blank=True, help_text="Per-node outcome, kept current.")
    error = models.TextField(blank=True, default="")
    claimed_by = models.CharField(
        max_length=200, blank=True, default="",
        help_text="host:pid:token of the process executing the run.",
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of the executing process (database time)."
    )
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Database time after which the holder counts as lost and the run may be taken over.",
    )
    published_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Database time of the last wake-up message sent to the workers for this run.",
    )
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When cancellation of the running run was asked for."
    )
    cancel_stop_node = models.BooleanField(
        default=False,
        help_text="The cancel request asks to interrupt the node being executed too (cancel_run --force).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # The console's two levels: view_pipelinerun (Django's own) to look, operate to act.
        permissions = [("operate_pipelines", "Can cancel, retry and run pipelines and pause schedules")]
        # Declared here rather than with db_index/unique on the fields: on PostgreSQL those also
        # add a second index per text field for LIKE queries, and every index is written again
        # whenever a run's row moves.
        # Each listing filter's column leads an index that goes on with the listing's order
        # (created_at, id): a page of the newest runs with one filter is read along that index
        # and stops after the page, whatever the size of the history (keyset paging, the admin,
        # the sweep's queued runs).
        indexes = [
            models.Index(fields=["created_at", "id"], name="pipelinerun_created"),
            models.Index(fields=["definition_name", "created_at", "id"], name="pipelinerun_definition_created"),
            # A definition's newest run of one trigger (list_schedules: its newest scheduled run) is one
            # probe, however many runs of other triggers came after it. Not a partial index on
            # trigger = 'schedule': a prepared statement's generic plan (the trigger a parameter)
            # cannot use one, and falls back to reading the definition's runs one by one.
            models.Index(
                fields=["definition_name", "trigger", "created_at", "id"], name="pipelinerun_definition_trigger"
            ),
            models.Index(fields=["status", "created_at", "id"], name="pipelinerun_status_created"),
            models.Index(fields=["trigger", "created_at", "id"], name="pipelinerun_trigger_created"),
            models.Index(fields=["target_host", "created_at", "id"], name="pipelinerun_host_created"),
            # Looked up by equality and by prefix (the admin's search). PostgreSQL's pattern
            # operator class serves both, so it is the only index on the column there.
            models.Index(fields=["trace_id"], name="pipelinerun_trace_id", opclasses=["varchar_pattern_ops"]),
        ]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="pipelinerun_unique_idempotency_key"),
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running"]) | Q(finished_at__isnull=False),
                name="pipelinerun_terminal_has_finished_at",
            ),
        ]

    def __str__(self):
        return f"run {self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class StageExecution(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    # No index of its own: the unique constraint's index (run, node_id, attempt) serves every
    # lookup by run (its stages, the cascade when runs are pruned).
    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="stages", db_index=False)
    node_id = models.CharField(max_length=100)
    node_type = models.CharField(max_length=50)
    # Not indexed: nothing looks stages up by status, and an index on it would keep a stage's
    # outcome from being written in place (PostgreSQL's HOT updates).
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    attempt = models.PositiveIntegerField(default=1)
    output = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "node_id", "attempt"], name="stage_unique_run_node_attempt"
            ),
        ]

    def __str__(self):
        return f"{self.node_id}#{self.attempt} ({self.status})"


class RunLogLine(models.Model):
    """One log line written while a run was executed (its engine, nodes and
    drivers), kept with the run: scrubbed, plain text, at most RUN_LOG_MAX_LINES
    per run and one marker line saying how many more were not kept."""

    # No index of its own: the unique constraint's index (run, seq) serves "the lines of a run
    # after seq S, in order" and the cascade when runs are pruned.
    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="log_lines", db_index=False)
    seq = models.PositiveIntegerField(help_text="Order of the line within its run, from 1.")
    logged_at = models.DateTimeField(
        help_text="When the line was logged, on the database's clock as the executing process carries it."
    )
    level = models.CharField(max_length=10, help_text="INFO, WARNING, ERROR...")
    logger = models.CharField(max_length=200, help_text="The logger's name.")
    node_id = models.CharField(max_length=100, blank=True, default="", help_text="The node being executed, if any.")
    message = models.TextField(help_text="The formatted message (and traceback), secrets scrubbed.")

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="runlogline_unique_run_seq")]

    def __str__(self):
        return f"{self.run_id}#{self.seq}"


# Upper bounds (seconds) of the duration histograms' buckets (+Inf is added); one ``le_<i>``
# column of the tallies per bound, so changing a bound needs a migration.
RUN_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
NODE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Tally(models.Model):
    """Counters of ended runs (or of their node attempts), added to when a run
    ends, in the transaction that writes its terminal status (store.run_end_tally).
    Rows are only ever added to, never recomputed: pruning runs changes nothing here.

    A series is split over a few ``shard`` rows (by writing process and thread) so
    that workers ending runs at once do not all wait on one row's lock."""

    shard = models.PositiveSmallIntegerField(help_text="Which of the series' rows this is (by writer).")
    count = models.BigIntegerField(default=0, help_text="How many ended.")
    timed = models.BigIntegerField(default=0, help_text="How many of them have a duration (the histogram's count).")
    # Whole microseconds, so sums are exact whatever the order rows are added in (a float's rounding
    # could make a scrape's _sum go down by a hair, which Prometheus reads as a counter reset).
    micros = models.BigIntegerField(default=0, help_text="The sum of those durations, in microseconds.")
    # Cumulative: how many timed ones took at most the i-th bound of the histogram's buckets.
    le_0 = models.BigIntegerField(default=0)
    le_1 = models.BigIntegerField(default=0)
    le_2 = models.BigIntegerField(default=0)
    le_3 = models.BigIntegerField(default=0)
    le_4 = models.BigIntegerField(default=0)
    le_5 = models.BigIntegerField(default=0)
    le_6 = models.BigIntegerField(default=0)
    le_7 = models.BigIntegerField(default=0)
    le_8 = models.BigIntegerField(default=0)
    le_9 = models.BigIntegerField(default=0)
    le_10 = models.BigIntegerField(default=0)
    le_11 = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class RunTally(Tally):
    """Ended runs per definition label, trigger and terminal status (and shard)."""

    definition = models.CharField(
        max_length=600, help_text="The metrics' definition label: a name, 'builtin', or 'config:<file name>'."
    )
    trigger = models.CharField(max_length=20)
    status = models.CharField(max_length=20)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["definition", "trigger", "status", "shard"], name="runtally_unique_series")
        ]

    def __str__(self):
        return f"{self.definition} {self.trigger} {self.status}: {self.count}"


class NodeTally(Tally):
    """Node attempts of ended runs per node type and attempt status (and shard)."""

    node_type = models.CharField(max_length=50)
    status = models.CharField(max_length=20)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node_type", "status", "shard"], name="nodetally_unique_series")
        ]

    def __str__(self):
        return f"{self.node_type} {self.status}: {self.count}"


class AlertDelivery(models.Model):
    """The runs one alert notification started for one definition, kept for
    the trigger's ``dedup_seconds``: the same notification received again
    before ``expires_at`` starts nothing and answers with these runs."""

    key = models.CharField(
        max_length=64,
        help_text="Hex sha256 of the definition, the source, the alert group, its alerts' fingerprints and statuses.",
    )
    definition_name = models.CharField(max_length=100, help_text="The definition the runs were started from.")
    run_ids = models.JSONField(default=list, help_text="The runs this notification started.")
    created_at = models.DateTimeField(help_text="When the notification started its runs.")
    expires_at = models.DateTimeField(
        db_index=True, help_text="Until when the same notification starts nothing (the prune removes it after)."
    )

    class Meta:
        # A constraint rather than unique=True: on PostgreSQL that would add a second (LIKE) index.
        constraints = [models.UniqueConstraint(fields=["key"], name="alertdelivery_unique_key")]

    def __str__(self):
        return f"alert delivery {self.pk} ({self.definition_name})"


class BeatLease(models.Model):
    """The one beat allowed to fire schedules: a lease renewed on the database's
    clock, as a run's is. Another beat finds it held, fires nothing and records
    itself in ``refused_by`` so ``manage.py doctor`` can report two beats."""

    name = models.CharField(max_length=50, help_text="What the lease is for (one row: 'beat').")
    holder = models.CharField(
        max_length=200, blank=True, default="", help_text="host:pid:token of the beat holding the lease."
    )
    acquired_at = models.DateTimeField(null=True, blank=True, help_text="When the holder took it (database time).")
    renewed_at = models.DateTimeField(null=True, blank=True, help_text="The holder's last renewal (database time).")
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Database time after which another beat may take the lease."
    )
    refused_by = models.CharField(
        max_length=200, blank=True, default="", help_text="The last beat that found the lease held by another."
    )
    refused_at = models.DateTimeField(null=True, blank=True, help_text="When it last did (database time).")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name"], name="beatlease_unique_name")]

    def __str__(self):
        return f"{self.name} lease ({self.holder or 'free'})"


class ScheduleState(models.Model):
    """Beat's clock for one pipeline schedule (a django-celery-beat PeriodicTask
    of the task ``orchestration.run_scheduled``): when it is next due. Beat
    fires what is due with one indexed query over ``next_due_at``."""

    task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.CASCADE, related_name="pipeline_state",
        help_text="The schedule's PeriodicTask (its interval or crontab, its enabled flag).",
    )
    definition_name = models.CharField(max_length=100, help_text="The definition each tick launches.")
    schedule = models.CharField(
        max_length=300, help_text="The schedule next_due_at was computed from; a change made elsewhere recomputes it."
    )
    next_due_at = models.DateTimeField(help_text="When the next tick is due (UTC).")
    last_due_at = models.DateTimeField(null=True, blank=True, help_text="The due time of the last tick fired.")
    last_fired_at = models.DateTimeField(
        null=True, blank=True, help_text="When beat fired the last tick (its runs' rows were written then)."
    )

    class Meta:
        indexes = [
            models.Index(fields=["next_due_at"], name="schedulestate_next_due"),
            # /metrics' latest lateness: the newest fire and the earliest due time among its ticks.
            models.Index(fields=["last_fired_at", "last_due_at"], name="schedulestate_last_fired"),
        ]

    def __str__(self):
        return f"{self.definition_name} due {self.next_due_at:%Y-%m-%d %H:%M:%S}"


class WorkerQueue(models.Model):
    """A queue a worker consumes, while it is live: the worker renews its rows on its
    own timer and expires them at a warm shutdown, so one that died stops counting
    when ``expires_at`` passes. /metrics counts the rows not expired, per queue."""

    worker = models.CharField(max_length=200, help_text="The worker's node name (celery@host).")
    queue = models.CharField(max_length=200, help_text="A queue it consumes.")
    renewed_at = models.DateTimeField(help_text="The worker's last renewal (database time).")
    expires_at = models.DateTimeField(help_text="Database time after which the worker no longer counts as live.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["worker", "queue"], name="workerqueue_unique")]

    def __str__(self):
        return f"{self.worker} on {self.queue}"


class Severity(models.TextChoices):
    """What a run found, worst last: the analysis' severity, else the worst of its checks."""

    OK = "ok", "OK"
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class MonitorState(models.Model):
    """The last severity runs of one definition found on one host: the alert
    board (``manage.py list_states``). Written with a run's end, in its fenced
    end write, so a worker that lost its run cannot move it."""

    definition = models.CharField(
        max_length=600, help_text="The definition's name, 'builtin', or 'config:<file name>'."
    )
    host = models.CharField(
        max_length=100, blank=True, default="",
        help_text="The host its checks measured (else the run's target host); empty when neither is known.",
    )
    severity = models.CharField(max_length=10, choices=Severity.choices, help_text="What the last run found.")
    since = models.DateTimeField(help_text="Since when the severity has been this one (database time).")
    last_run_id = models.BigIntegerField(help_text="The run whose end wrote this row (it may have been pruned since).")
    last_run_at = models.DateTimeField(help_text="When that run ended (database time).")
    last_notified_at = models.DateTimeField(
        null=True, blank=True, help_text="When a run of it last sent a notice about this host (database time)."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["definition", "host"], name="monitorstate_unique_key")]
        indexes = [models.Index(fields=["severity", "since"], name="monitorstate_severity")]

    def __str__(self):
        return f"{self.definition} on {self.host or '-'}: {self.severity}"


class MonitorNotice(models.Model):
    """What one notify node with ``notify_on`` last told its receivers about one
    host. Claimed by a conditional update on ``version`` before the node sends,
    so two runs ending at once decide "changed" once."""

    definition = models.CharField(max_length=600, help_text="As MonitorState.definition.")
    host = models.CharField(max_length=100, blank=True, default="", help_text="As MonitorState.host.")
    node_id = models.CharField(max_length=100, help_text="The notify node.")
    severity = models.CharField(max_length=10, choices=Severity.choices, help_text="The severity last notified.")
    since = models.DateTimeField(help_text="Since when receivers have heard of this severity (database time).")
    notified_at = models.DateTimeField(help_text="When the last notice (or reminder) was claimed (database time).")
    run_id = models.BigIntegerField(help_text="The run that claimed it.")
    notice = models.CharField(
        max_length=10, blank=True, default="", help_text="The kind of the last notice: problem, reminder, resolved."
    )
    previous_severity = models.CharField(
        max_length=10, blank=True, default="", help_text="What receivers had heard before the last notice."
    )
    previous_since = models.DateTimeField(null=True, blank=True, help_text="Since when they had heard it.")
    version = models.BigIntegerField(default=1, help_text="Raised by every claim: the compare-and-set fence.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["definition", "host", "node_id"], name="monitornotice_unique_key")
        ]

    def __str__(self):
        return f"{self.definition} on {self.host or '-'} ({self.node_id}): {self.severity}"
