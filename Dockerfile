# convq's images, one file, three targets (sizes measured by `make compose-test`, README "Deploy"):
#   api         Flask + gunicorn, no torch (the API never imports it)
#   worker      Celery + the CPU build of torch
#               (with --build-arg TORCH_INDEX=<a CUDA wheel index>: the GPU worker, several GB)
#   flower      Celery's monitor, for `docker compose --profile monitoring`
# Build stages install into /opt/venv; the final stages copy it without pip, run as a non-root user,
# and hold no compiler, pip cache or tests.
#
# The base is a build argument so that an offline or mirrored build can substitute its own Python
# 3.11 image; behind a TLS-intercepting proxy or with a package mirror, the optional build secrets
# pip_conf (a pip.conf) and pip_ca (its CA bundle) reach pip: see docker-compose.proxy.yml.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 convq \
 && useradd --system --uid 10001 --gid convq --no-create-home --shell /usr/sbin/nologin convq
WORKDIR /app

FROM base AS api-deps
COPY requirements/shared.txt requirements/api.txt requirements/
RUN --mount=type=secret,id=pip_conf,target=/etc/pip.conf --mount=type=secret,id=pip_ca,target=/etc/ssl/certs/pip-ca.crt \
    python -m venv /opt/venv \
 && pip install --no-cache-dir -r requirements/api.txt \
 && pip uninstall --yes pip setuptools \
 && find /opt/venv -type d -name tests \( -path '*/numpy/*' -o -path '*/matplotlib/*' \) -prune -exec rm -rf {} +

FROM base AS worker-deps
# PyPI's torch for Linux is the CUDA build (several GB); the CPU build comes from PyTorch's own index.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY requirements/shared.txt requirements/worker.txt requirements/
RUN --mount=type=secret,id=pip_conf,target=/etc/pip.conf --mount=type=secret,id=pip_ca,target=/etc/ssl/certs/pip-ca.crt \
    python -m venv /opt/venv \
 && pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" -r requirements/worker.txt \
 && pip uninstall --yes pip setuptools \
 && find /opt/venv -type d -name tests -path '*/numpy/*' -prune -exec rm -rf {} +

FROM base AS flower-deps
COPY requirements/shared.txt requirements/flower.txt requirements/
RUN --mount=type=secret,id=pip_conf,target=/etc/pip.conf --mount=type=secret,id=pip_ca,target=/etc/ssl/certs/pip-ca.crt \
    python -m venv /opt/venv \
 && pip install --no-cache-dir -r requirements/flower.txt \
 && pip uninstall --yes pip setuptools

FROM base AS api
COPY --from=api-deps /opt/venv /opt/venv
COPY shared/ shared/
COPY api/ api/
COPY bin/api bin/
# matplotlib's font cache, built once here; the user has no home, where matplotlib would look for it.
ENV HOST=0.0.0.0 PORT=8000 PROMETHEUS_MULTIPROC_DIR=/tmp/convq-metrics MPLCONFIGDIR=/opt/matplotlib
RUN python -c "import matplotlib.font_manager" && chown -R 10001:10001 /opt/matplotlib
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["bin/api"]

FROM base AS worker
COPY --from=worker-deps /opt/venv /opt/venv
COPY shared/ shared/
COPY services/ services/
COPY worker/ worker/
COPY bin/worker bin/
COPY scripts/gpu_check.py scripts/
USER 10001:10001
# The worker imports torch before it answers a ping: 30-40 s on 2 cores.
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 CMD ["python", "-m", "worker.ping"]
CMD ["bin/worker"]

FROM base AS flower
COPY --from=flower-deps /opt/venv /opt/venv
COPY bin/flower bin/
USER 10001:10001
EXPOSE 5555
CMD ["bin/flower"]
