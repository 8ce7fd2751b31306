"""The baseline convq is measured against: the plainest Flask + Celery service doing the same tiny correlation.

No validation beyond parsing, no job store, no limits: Celery's own Redis
result backend holds the result and clients submit, then poll. Run it with
`gunicorn bench.bare:api` and `celery -A bench.bare worker`; BENCH_REDIS_URL
names the Redis (bench/run.py starts both on the Redis convq uses).
"""

import os

import torch
import torch.nn.functional as F
from celery import Celery
from flask import Flask, jsonify, request

queue = Celery("bare", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
queue.conf.update(task_default_queue="bare", task_serializer="json", result_serializer="json", result_expires=600)
api = Flask(__name__)


@queue.task(name="bare.correlate")
def correlate(input: list[list[float]], kernel: list[list[float]]) -> list[list[float]]:
    X, K = torch.tensor(input), torch.tensor(kernel)
    return F.conv2d(X[None, None], K[None, None])[0, 0].tolist()


@api.post("/correlations")
def submit():
    body = request.get_json()
    return jsonify(id=correlate.delay(body["input"], body["kernel"]).id), 202


@api.get("/correlations/<task_id>")
def result(task_id: str):
    outcome = queue.AsyncResult(task_id)
    return jsonify(status=outcome.state, output=outcome.result if outcome.successful() else None)
