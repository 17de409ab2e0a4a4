from django.contrib import admin

from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution


@admin.register(PipelineDefinition)
class PipelineDefinitionAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "is_active", "updated_at")
    search_fields = ("name", "description")


class StageExecutionInline(admin.TabularInline):
    model = StageExecution
    extra = 0
    readonly_fields = ("node_id", "node_type", "status", "attempt", "duration_ms", "errors")


@admin.register(PipelineRun)
class PipelineRunAdmin(admin.ModelAdmin):
    list_display = ("id", "origin", "status", "trace_id", "created_at", "duration_ms")
    list_filter = ("status", "source", "environment")
    search_fields = ("trace_id", "origin")
    inlines = [StageExecutionInline]
