"""Plain views of the web service outside the API: the liveness check."""
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 ``{"status": "ok"}`` while the process answers: reads no database, broker or secret,
    so a load balancer's probe costs nothing and says only that the web process is up."""
    return JsonResponse({"status": "ok"})
