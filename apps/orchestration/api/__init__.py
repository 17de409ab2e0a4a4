"""The orchestration app's API routers, one module per resource, mounted by apps/api/urls.py."""
