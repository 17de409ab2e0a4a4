"""Benchmark of the pipeline launcher against raw Celery (see bench/README.md)."""
