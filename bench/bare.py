"""The baseline convq is measured against: the plainest Flask + Celery service doing the same correlations.

No validation beyond parsing, no job store, no limits: Celery's own Redis
result backend holds the result and clients submit, then poll. A big input
comes in the base64 form and goes to the task as its argument, its output
comes back the same way (what one writes without convq). Run it with
`gunicorn bench.bare:api` and `celery -A bench.bare worker`; BENCH_REDIS_URL
names the Redis (bench/run.py starts both on the Redis convq uses).
"""

import os

import numpy as np
import pybase64
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


@queue.task(name="bare.correlate_base64")
def correlate_base64(input: dict, kernel: list[list[float]]) -> dict:
    X = torch.from_numpy(np.frombuffer(pybase64.b64decode(input["data"]), "<f4").reshape(input["shape"]))
    output = F.conv2d(X[None, None], torch.tensor(kernel)[None, None])[0, 0].contiguous().numpy()
    return {"shape": list(output.shape), "dtype": "float32", "data": pybase64.b64encode_as_string(output)}


@api.post("/correlations")
def submit():
    body = request.get_json()
    task = correlate_base64 if isinstance(body["input"], dict) else correlate
    return jsonify(id=task.delay(body["input"], body["kernel"]).id), 202


@api.get("/correlations/<task_id>")
def result(task_id: str):
    outcome = queue.AsyncResult(task_id)
    return jsonify(status=outcome.state, output=outcome.result if outcome.successful() else None)
