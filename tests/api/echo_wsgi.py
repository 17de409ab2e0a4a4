"""The project's WSGI application serving tests/api/echo_urls.py (the API's framework with a
route that reads a body), for tests that need a real server (gunicorn)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (after setup)

# Read by the handler at each request.
settings.ROOT_URLCONF = "tests.api.echo_urls"
