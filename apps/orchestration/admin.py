"""The Django admin for definitions, runs and their stages.

Runs and stages are records of what happened: the admin shows them and never
edits them. Operating on a run (cancelling it) goes through the same services
as the commands. Everything a run recorded is shown scrubbed of known secrets
and with control characters made visible.
"""
from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.forms.fields import InvalidJSONInput, JSONString
from django.utils.functional import cached_property
from django.utils.html import format_html

from apps import jsondata
from apps.orchestration.launchrequest import AlreadyRetried, LaunchError
from apps.orchestration.listings import format_duration
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from apps.orchestration.run_actions import pipeline_run_cancel, pipeline_run_retry
from apps.orchestration.schedules import schedule_disable, schedule_sync
from apps.orchestration.selectors import RUN_ID_MAX, trace_id_prefix
from apps.orchestration.store import planned_for_values, run_column_values
from apps.orchestration.validation import validate_definition
from apps.secrets import scrub
from apps.text import printable, shorten

PRODUCT_NAME = "Pipeline launcher"
# The admin is for data fixes; operators work in the console at "/", where "View site" leads.
admin.site.site_url = "/"
admin.site.site_header = f"{PRODUCT_NAME} admin"
admin.site.site_title = f"{PRODUCT_NAME} admin"
admin.site.index_title = "Data fixes"

# Width of the error column in the run list; the whole error is on the run's page.
SHORT_ERROR_WIDTH = 80
# The run list counts its runs up to this many (then says "more than"), and pages through them.
RUN_COUNT_MAX = 10_000
# The most values a definition or host filter offers (any other value still works in the URL).
FILTER_CHOICES_MAX = 200


def shown_text(value, *, lines: bool = False) -> str:
    """Text a run recorded, as the admin shows it: secrets scrubbed, control characters escaped."""
    return printable(scrub(value or ""), lines=lines)


def shown_json(value):
    """A recorded JSON value as a pretty-printed, scrubbed, escaped ``<pre>`` block."""
    text = json.dumps(scrub(value), indent=2, ensure_ascii=False, sort_keys=False)
    # format_html escapes the HTML; printable makes bidi and other invisible characters visible.
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', printable(text, lines=True))


# --- Definitions ---------------------------------------------------------------


class BoundedJSONField(forms.JSONField):
    """Django's JSON form field reading through apps.jsondata: text nested past
    its depth, NaN, numbers of thousands of digits or NUL characters are a
    form error naming the problem (Django's own reader lets them through or
    raises past its JSONDecodeError handling: a 500)."""

    def to_python(self, value):
        if self.disabled or value in self.empty_values or not isinstance(value, str | bytes):
            return super().to_python(value)
        try:
            converted = jsondata.loads(value)
        except jsondata.JsonInputError as exc:
            raise forms.ValidationError("Invalid JSON: %(problem)s", code="invalid", params={"problem": exc}) from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data, initial):
        if self.disabled or data is None:
            return super().bound_data(data, initial)
        try:
            return jsondata.loads(data)
        except jsondata.JsonInputError:
            return InvalidJSONInput(data)  # shown again as typed, next to the error


class PipelineDefinitionForm(forms.ModelForm):
    """Refuses a config the launcher would refuse, with the validator's messages."""

    class Meta:
        model = PipelineDefinition
        fields = ("name", "description", "config", "tags", "is_active")
        field_classes = {"config": BoundedJSONField, "tags": BoundedJSONField}

    def clean_config(self):
        config = self.cleaned_data.get("config")
        problems = validate_definition(config)
        if problems:
            raise forms.ValidationError([forms.ValidationError(message) for message in problems])
        return config


@admin.register(PipelineDefinition)
class PipelineDefinitionAdmin(admin.ModelAdmin):
    form = PipelineDefinitionForm
    list_display = ("name", "is_active", "has_schedule", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("name", "description")
    readonly_fields = ("version", "created_at", "updated_at")

    @admin.display(boolean=True, description="Schedule")
    def has_schedule(self, obj: PipelineDefinition) -> bool:
        return bool(isinstance(obj.config, dict) and obj.config.get("schedule"))

    def save_model(self, request, obj, form, change):
        # The format version lives in the config; the column mirrors it, as load_pipelines does.
        obj.version = str(obj.config.get("version", obj.version))
        renamed_from = form.initial.get("name") if change and "name" in form.changed_data else None
        super().save_model(request, obj, form, change)
        # Beat reads schedules from its own table: keep it in step with the edited definition.
        if renamed_from:
            schedule_disable(definition_name=renamed_from)
        schedule_sync(definition=obj)

    def delete_model(self, request, obj):
        name = obj.name
        super().delete_model(request, obj)
        schedule_disable(definition_name=name)

    def delete_queryset(self, request, queryset):
        names = list(queryset.values_list("name", flat=True))
        super().delete_queryset(request, queryset)
        for name in names:
            schedule_disable(definition_name=name)


# --- Runs and stages -----------------------------------------------------------


class ReadOnlyAdminMixin:
    """Recorded facts: shown, never added, changed or deleted here (`prune_runs` deletes old runs)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class StageExecutionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = StageExecution
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ("started_at", "id")
    fields = ("node_id", "node_type", "status", "attempt", "started_at", "duration", "errors_shown", "output_shown")
    readonly_fields = fields

    @admin.display(description="Duration")
    def duration(self, obj: StageExecution) -> str:
        return format_duration(obj.duration_ms)

    @admin.display(description="Errors")
    def errors_shown(self, obj: StageExecution):
        if not obj.errors:
            return "-"
        return shown_json(obj.errors)

    @admin.display(description="Output")
    def output_shown(self, obj: StageExecution):
        if not obj.output:
            return "-"
        # Outputs can be long: folded, so the stage table stays readable.
        return format_html("<details><summary>show</summary>{}</details>", shown_json(obj.output))


class RunChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # A list never shows the snapshot, payload or result blobs: do not read them.
        return super().get_queryset(request, exclude_parameters).defer("config_snapshot", "payload", "result")

    def get_results(self, request):
        # The count and the page, read here (not later, by the template) and planned for the
        # filters' values: with two filters, a plan made for their average values can read every
        # run of a definition that holds half of them to count the few that match the other.
        with planned_for_values():
            super().get_results(request)
            self.result_list = list(self.result_list)


class CappedCountPaginator(Paginator):
    """Counts at most RUN_COUNT_MAX of the list's rows (reading RUN_COUNT_MAX + 1
    of them along the list's index, never the whole table): ``count`` stops
    there, and ``capped`` says there are more. The pages after the cap are not
    offered; the filters and the search narrow a list down to them."""

    @cached_property
    def _counted(self) -> int:
        runs: QuerySet = self.object_list  # type: ignore[assignment]  # the changelist's queryset
        return runs[: RUN_COUNT_MAX + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._counted, RUN_COUNT_MAX)

    @property
    def capped(self) -> bool:
        return self._counted > RUN_COUNT_MAX


class IndexedValueFilter(admin.SimpleListFilter):
    """Runs with one value of a column that leads an index; the values offered
    are read along that index (store.run_column_values), at most FILTER_CHOICES_MAX,
    never by a DISTINCT over the runs."""

    column = ""

    def lookups(self, request, model_admin):
        return [(value, shown_text(value)) for value in run_column_values(self.column, limit=FILTER_CHOICES_MAX)]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(**{self.column: value})


class DefinitionFilter(IndexedValueFilter):
    title = "definition name"
    parameter_name = column = "definition_name"


class HostFilter(IndexedValueFilter):
    title = "target host"
    parameter_name = column = "target_host"


@admin.register(PipelineRun)
class PipelineRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # A new column goes after created_at: a sort in a link (?o=5 for created_at) names a column by position.
    list_display = (
        "id", "origin_shown", "target_host", "trigger", "status", "created_at", "duration", "retry_of_shown",
        "short_error",
    )
    list_display_links = ("id",)
    list_filter = ("status", DefinitionFilter, HostFilter, "trigger", ("created_at", admin.DateFieldListFilter))
    search_fields = ("trace_id",)
    search_help_text = "A run id, or a trace id (or its beginning)."
    ordering = ("-created_at", "-id")
    # Only the orders an index serves, with any filter: a sort of the whole history is not offered.
    sortable_by = ("created_at",)
    list_per_page = 50
    # Neither an exact count of the whole table nor of the filtered list: both grow with the history.
    show_full_result_count = False
    paginator = CappedCountPaginator
    actions = ("cancel_runs", "retry_runs", "retry_runs_from_failed")
    inlines = (StageExecutionInline,)
    fieldsets = (
        (
            None,
            {"fields": (
                "id", "status", "trigger", "retry_of", "retry_root", "origin_shown", "origin_kind", "definition",
                "trace_id", "target_host", "group_id",
            )},
        ),
        ("Timing", {"fields": ("created_at", "started_at", "finished_at", "duration", "current_node")}),
        ("Outcome", {"fields": ("error_shown", "result_shown")}),
        ("Input", {"fields": ("source", "environment", "payload_shown", "config_snapshot_shown")}),
        (
            "Execution",
            {
                "fields": (
                    "claimed_by", "heartbeat_at", "lease_expires_at", "published_at",
                    "cancel_requested_at", "idempotency_key",
                ),
                "classes": ("collapse",),
            },
        ),
    )
    readonly_fields = (
        "id", "status", "trigger", "retry_of", "retry_root", "origin_shown", "origin_kind", "definition", "trace_id",
        "target_host", "group_id", "created_at", "started_at", "finished_at", "duration", "current_node",
        "error_shown", "result_shown", "source", "environment", "payload_shown", "config_snapshot_shown",
        "claimed_by", "heartbeat_at", "lease_expires_at", "published_at", "cancel_requested_at", "idempotency_key",
    )

    def get_changelist(self, request, **kwargs):
        return RunChangeList

    def get_search_results(self, request, queryset, search_term):
        """Runs whose id is the term (when it is a whole number in range) or
        whose trace id starts with it (case-sensitive, so the index serves it)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        matches = PipelineRun.objects.filter(trace_id_prefix(term))
        if term.isascii() and term.isdigit() and 0 < int(term) <= RUN_ID_MAX:
            matches = matches | PipelineRun.objects.filter(pk=int(term))
        return queryset.filter(pk__in=matches.values("pk")), False

    @admin.display(description="Definition / origin", ordering="origin")
    def origin_shown(self, obj: PipelineRun) -> str:
        return shown_text(obj.origin)

    @admin.display(description="Retry of")
    def retry_of_shown(self, obj: PipelineRun) -> str:
        # The column's value, not the run it names: no query per listed run.
        return str(obj.retry_of_id) if obj.retry_of_id is not None else ""

    @admin.display(description="Duration", ordering="duration_ms")
    def duration(self, obj: PipelineRun) -> str:
        return format_duration(obj.duration_ms)

    @admin.display(description="Error")
    def short_error(self, obj: PipelineRun) -> str:
        return shorten(shown_text(obj.error), SHORT_ERROR_WIDTH) if obj.error else ""

    @admin.display(description="Error")
    def error_shown(self, obj: PipelineRun):
        if not obj.error:
            return "-"
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', shown_text(obj.error, lines=True))

    @admin.display(description="Result")
    def result_shown(self, obj: PipelineRun):
        return shown_json(obj.result)

    @admin.display(description="Payload")
    def payload_shown(self, obj: PipelineRun):
        return shown_json(obj.payload)

    @admin.display(description="Definition snapshot")
    def config_snapshot_shown(self, obj: PipelineRun):
        return shown_json(obj.config_snapshot)

    def has_cancel_permission(self, request) -> bool:
        """Cancelling is operating a run: it takes the model's change permission (a superuser has it)."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    @admin.action(description="Cancel selected runs", permissions=("cancel",))
    def cancel_runs(self, request, queryset):
        """Cancel each selected run through the same service as `cancel_run`, one message per run."""
        for run_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                run = pipeline_run_cancel(run_id=run_id)
            except LaunchError as exc:
                self.message_user(request, f"Run {run_id} not cancelled: {exc}", messages.ERROR)
                continue
            if run.status == PipelineRun.Status.CANCELLED:
                done = f"Run {run_id} is already cancelled." if run.already_cancelled else f"Run {run_id} cancelled."
                self.message_user(request, done, messages.SUCCESS)
            else:
                node = "is being stopped" if run.cancel_stop_node else "is not interrupted"
                self.message_user(
                    request,
                    f"Cancellation of run {run_id} requested: node '{shown_text(run.current_node)}' "
                    f"{node}, and no node after it starts.",
                    messages.INFO,
                )

    def has_retry_permission(self, request) -> bool:
        """Retrying launches a run: it takes the same permission as cancelling."""
        return self.has_cancel_permission(request)

    def _retry(self, request, queryset, *, from_failed: bool) -> None:
        for run_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                retry = pipeline_run_retry(run_id=run_id, from_failed=from_failed)
            except AlreadyRetried as exc:
                self.message_user(
                    request,
                    f"Run {run_id} not retried: it was already retried as run {exc.retry_id} "
                    "(retry_run --force retries it again).",
                    messages.ERROR,
                )
                continue
            except LaunchError as exc:
                self.message_user(request, f"Run {run_id} not retried: {exc}", messages.ERROR)
                continue
            self.message_user(request, f"Run {run_id} retried as run {retry.pk} (queued).", messages.SUCCESS)

    @admin.action(description="Retry selected runs", permissions=("retry",))
    def retry_runs(self, request, queryset):
        """Launch a new run of each selected one through the same service as `retry_run`."""
        self._retry(request, queryset, from_failed=False)

    @admin.action(description="Retry selected runs from their failed node", permissions=("retry",))
    def retry_runs_from_failed(self, request, queryset):
        """As `retry_run --from-failed`: nodes that succeeded before the failure are reused."""
        self._retry(request, queryset, from_failed=True)
