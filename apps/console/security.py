"""What every console page carries: login, the two permission levels, and a
Content-Security-Policy that lets no inline or foreign script run."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

VIEW_PERMISSION = "orchestration.view_pipelinerun"
OPERATE_PERMISSION = "orchestration.operate_pipelines"

# Scripts and styles from this site's own files only: text from a run (a trace id, an
# alert, a node's output) can never become a script, even if it reached the markup.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def with_policy(response: HttpResponseBase) -> HttpResponseBase:
    """``response`` with the console's Content-Security-Policy and no framing."""
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["X-Frame-Options"] = "DENY"
    response["Referrer-Policy"] = "same-origin"
    return response


def console_page(*, operate: bool = False) -> Callable:
    """Decorates a console view: an anonymous visitor goes to the login page;
    a signed-in user without the view permission (and, with ``operate``, the
    operate permission) gets 403; every answer carries the policy headers."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
            needed = (VIEW_PERMISSION, OPERATE_PERMISSION) if operate else (VIEW_PERMISSION,)
            if not request.user.has_perms(needed):
                raise PermissionDenied
            return with_policy(view(request, *args, **kwargs))

        return login_required(wrapped)

    return decorate


def can_operate(request: HttpRequest) -> bool:
    return request.user.has_perm(OPERATE_PERMISSION)
