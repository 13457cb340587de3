# One image for every Python service and the operator:
#   docker run claire-de-binare python -m cdb.signal_engine   (or cdb.bot_ws, cdb_operator, ...)
# Built by `make image`. Runs as botuser (UID/GID 1000) with a read-only root filesystem:
# the only writable places are /data and /tmp (volumes in the chart). Nothing secret is
# inside: passwords and MEXC keys come from the environment (Kubernetes Secrets) at run time.

# Build stage: the locked dependency set (uv.lock, hash-checked) and the project, no dev
# dependencies. Without a wheelhouse it installs from PyPI; with wheelhouse/ filled from
# uv.lock on the host (`make setup`: scripts/setup.d/27-wheelhouse.sh) pip and uv are
# told to use only those wheels, so the build reaches no network and is reproducible.
# PYTHON_IMAGE swaps the base, keeping the tag (the tests use cdb-test/python:3.11-slim,
# a stand-in made from Debian packages).
ARG PYTHON_IMAGE=python
ARG PYTHON_TAG=3.11-slim
FROM ${PYTHON_IMAGE}:${PYTHON_TAG} AS build
# Only what the services import at run time; CDB_EXTRAS=tools adds the offline tools
# (reports, replay from Parquet, model training, `cdb view`: pyproject.toml's extra).
ARG CDB_EXTRAS=""
ENV UV_VERSION=0.13.8 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY wheelhouse/ /wheelhouse/
RUN if [ -f /wheelhouse/requirements.txt ]; then \
      printf '[global]\nno-index = true\nfind-links = /wheelhouse\n' > /etc/pip.conf \
   && mkdir -p /etc/uv \
   && printf 'offline = true\nno-index = true\nfind-links = ["/wheelhouse"]\n' > /etc/uv/uv.toml; \
    fi \
 && pip install "uv==${UV_VERSION}"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv export --frozen --no-dev --no-emit-project --quiet ${CDB_EXTRAS:+--extra "$CDB_EXTRAS"} \
      -o /tmp/requirements.txt \
 && uv venv --quiet /app/.venv \
 && uv pip sync --require-hashes --python /app/.venv/bin/python /tmp/requirements.txt
COPY services/ services/
COPY operator/ operator/
# The packages' own test suites (numpy's, scipy's: ~50 MB) are never imported at run time.
# The services run with -OO (the chart's commands): their bytecode without docstrings is
# compiled here, as the root filesystem is read-only at run time; not for the tree
# library's stack, which only ml_advisor loads, without -OO.
RUN uv pip install --no-deps --python /app/.venv/bin/python . \
 && find /app/.venv/lib -type d -name tests -path '*/site-packages/*' -prune -exec rm -rf {} + \
 && /app/.venv/bin/python -m compileall -q -j0 -o 2 \
      -x '/site-packages/(numpy|scipy|xgboost)/' /app/.venv/lib

# Run stage: the virtualenv, the migrations, and a non-root user.
FROM ${PYTHON_IMAGE}:${PYTHON_TAG}
# The interpreter's own library compiled both ways (plain, and -OO for the services), so
# nothing is compiled in memory at each start on the read-only root; its test folders
# hold files that do not compile on purpose.
RUN python -m compileall -q -j0 -o 0 -o 2 -x '/(test|tests|idle_test|lib2to3)/' \
      "$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" \
 && groupadd --gid 1000 botuser \
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
