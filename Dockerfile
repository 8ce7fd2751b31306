# syntax=docker/dockerfile:1
# convq's images, one file, three targets:
#   api         Flask + gunicorn, no torch (the API never imports it): ~180 MB
#   worker      Celery + the CPU build of torch: ~1.1 GB
#   (worker with --build-arg TORCH_INDEX=<a CUDA wheel index>: the GPU worker, several GB)
# Build stages install into /opt/venv; the final stages copy it, run as a non-root user,
# and hold no compiler, pip cache or tests.

FROM python:3.11.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 convq \
 && useradd --system --uid 10001 --gid convq --no-create-home --shell /usr/sbin/nologin convq
WORKDIR /app

FROM base AS api-deps
COPY requirements/api.txt requirements/
RUN python -m venv /opt/venv && pip install --no-cache-dir -r requirements/api.txt

FROM base AS worker-deps
# PyPI's torch for Linux is the CUDA build (several GB); the CPU build comes from PyTorch's own index.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY requirements/api.txt requirements/worker.txt requirements/
RUN python -m venv /opt/venv && pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" -r requirements/worker.txt

FROM base AS api
COPY --from=api-deps /opt/venv /opt/venv
COPY shared/ shared/
COPY api/ api/
COPY bin/api bin/
ENV HOST=0.0.0.0 PORT=8000 PROMETHEUS_MULTIPROC_DIR=/tmp/convq-metrics
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
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["python", "-m", "worker.ping"]
CMD ["bin/worker"]
