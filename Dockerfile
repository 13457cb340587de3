# One image for every Python service and the operator:
#   docker run claire-de-binare python -m cdb.signal_engine   (or cdb.bot_ws, cdb_operator, ...)
# Built by `make image`. Runs as botuser (UID/GID 1000) with a read-only root filesystem:
# the only writable places are /data and /tmp (volumes in the chart). Nothing secret is
# inside: passwords and MEXC keys come from the environment (Kubernetes Secrets) at run time.

# Build stage: the locked dependency set (uv.lock) and the project, no dev dependencies.
FROM python:3.11-slim AS build
ENV UV_VERSION=0.13.8 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "uv==${UV_VERSION}"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY services/ services/
COPY operator/ operator/
RUN uv sync --frozen --no-dev --no-editable

# Run stage: the virtualenv, the migrations, and a non-root user.
FROM python:3.11-slim
RUN groupadd --gid 1000 botuser \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin botuser \
 && install -d -o 1000 -g 1000 -m 0750 /data
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY migrations/ /app/migrations/
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    CDB_MIGRATIONS_DIR=/app/migrations
USER 1000:1000
VOLUME ["/data", "/tmp"]
EXPOSE 8000 8001 8002 8003 8004 8005 8010 8080
# Each service serves /health on its HTTP_PORT (Kubernetes uses its own probes instead).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HTTP_PORT', '8000'), timeout=4)"]
CMD ["cdb", "--help"]
