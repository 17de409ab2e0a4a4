"""HTTP views of the orchestration app: the Prometheus scrape endpoint."""
import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from ninja.errors import HttpError
from prometheus_client import CONTENT_TYPE_LATEST

from apps.api.auth import request_key
from apps.api.errors import error_response
from apps.orchestration.metrics import metrics_read, metrics_text

logger = logging.getLogger("apps.orchestration.views")


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The run metrics in Prometheus's text format, read from the database now.

    Needs an API key with scope ``metrics`` (401/403 as JSON otherwise) unless
    METRICS_PUBLIC is set. Answers 503 with one line when the database cannot
    be read, so the scrape shows as failed instead of reporting stale or zero values."""
    try:
        if not settings.METRICS_PUBLIC:
            request_key(request, "metrics")
        # Only the run metrics: the web process's own CPU or memory says nothing about runs.
        body = metrics_text(metrics_read())
    except HttpError as exc:
        return error_response(exc.status_code, exc.message)
    except DatabaseError as exc:
        logger.warning("event=metrics.unavailable error=%s", f"{type(exc).__name__}: {exc}".strip())
        return HttpResponse("database unavailable\n", status=503, content_type="text/plain; charset=utf-8")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
