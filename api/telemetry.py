"""Request ids, request logs and Prometheus metrics for every request; GET /metrics.

HTTP metrics live in this process (prometheus_client's multiprocess mode adds
up gunicorn's workers when PROMETHEUS_MULTIPROC_DIR is set, as bin/api does);
job metrics live in the job store, counted by the scripts that change job
states, so they cover every worker on every host.
"""

import logging
import os
import re
import time
import uuid

from flask import Blueprint, Flask, Response, g, request
from kombu.exceptions import OperationalError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from redis.exceptions import RedisError

from api.runtime import runtime
from shared import logs
from shared.jobstore import RUN_TIME_BUCKETS, JobCounts
from shared.taskqueue import queue_lengths

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_ACCEPTABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

HTTP_REQUESTS = Counter("convq_http_requests", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram("convq_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"])

bp = Blueprint("telemetry", __name__)


def init_app(app: Flask) -> None:
    """Give every request an id (the client's X-Request-ID if sane), a log line and its metrics."""

    @app.before_request
    def _begin() -> None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = offered if _ACCEPTABLE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        g.request_id_token = logs.request_id.set(g.request_id)
        g.started = time.perf_counter()

    @app.after_request
    def _end(response: Response) -> Response:
        elapsed = time.perf_counter() - g.started
        route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded label values
        HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        HTTP_LATENCY.labels(request.method, route).observe(elapsed)
        response.headers[REQUEST_ID_HEADER] = g.request_id
        log.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status_code,
            extra={"status": response.status_code, "duration_ms": round(elapsed * 1000, 2), "route": route},
        )
        return response

    @app.teardown_request
    def _forget(_: BaseException | None) -> None:
        token = g.pop("request_id_token", None)  # a streamed response tears down twice
        if token is not None:
            logs.request_id.reset(token)

    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format: this API's HTTP metrics (all its processes) and every job's."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        http = CollectorRegistry()
        MultiProcessCollector(http)
    else:
        http = REGISTRY
    jobs = CollectorRegistry()
    up = Gauge("convq_job_store_up", "1 if the job store (Redis) answered this scrape", registry=jobs)
    try:
        store = runtime().store
        counters = store.counts()
        queued = queue_lengths(store.redis)
    except (RedisError, OperationalError) as error:
        log.warning("job metrics unavailable: %s", error)
        up.set(0)
    else:
        jobs.register(JobCollector(counters, queued))
        up.set(1)
    return Response(generate_latest(http) + generate_latest(jobs), mimetype=CONTENT_TYPE_LATEST)


class JobCollector:
    """Exports a snapshot of the job store's counters."""

    def __init__(self, counters: JobCounts, queued: dict[str, int]):
        self.counters, self.queued = counters, queued

    def collect(self):
        counters = self.counters
        submitted = CounterMetricFamily("convq_jobs_submitted", "Jobs accepted", labels=["kind"])
        for kind, count in counters.submitted.items():
            submitted.add_metric([kind], count)
        finished = CounterMetricFamily("convq_jobs_finished", "Jobs ended, by final status", labels=["kind", "status"])
        for (kind, status), count in counters.finished.items():
            finished.add_metric([kind, status], count)
        epochs = CounterMetricFamily("convq_epochs_run", "Training epochs recorded (once each, whatever the retries)")
        epochs.add_metric([], counters.epochs)
        queue = GaugeMetricFamily("convq_queue_length", "Messages waiting in each job queue", labels=["queue"])
        for device, length in self.queued.items():
            queue.add_metric([device], length)
        run_time = HistogramMetricFamily(
            "convq_job_run_seconds", "Run time of the attempt that ended a job", labels=["kind"]
        )
        for kind in sorted({kind for kind, _ in counters.run_seconds_buckets}):
            cumulative, buckets = 0, []
            for bound in [f"{bound:g}" for bound in RUN_TIME_BUCKETS] + ["+Inf"]:
                cumulative += counters.run_seconds_buckets.get((kind, bound), 0)
                buckets.append((bound, cumulative))
            run_time.add_metric([kind], buckets, counters.run_seconds_sum.get(kind, 0.0))
        yield from (submitted, finished, epochs, queue, run_time)
