"""The Celery tasks: thin wrappers that run one job of each kind through the job runner."""

from shared.schemas import CorrelationRequest, KernelTrainingRequest
from shared.taskqueue import TASK_FOR_KIND
from worker import compute
from worker.celery_app import app
from worker.runner import run_job


@app.task(name=TASK_FOR_KIND["correlation"])
def correlate(job_id: str) -> None:
    run_job(job_id, CorrelationRequest, compute.correlate)


@app.task(name=TASK_FOR_KIND["kernel_training"])
def train_kernel(job_id: str) -> None:
    run_job(job_id, KernelTrainingRequest, compute.train)
