"""The Celery tasks: thin wrappers that run one job of each kind through the job runner."""

from shared.request_models import CorrelationRequest, KernelTrainingRequest
from shared.taskqueue import TASK_FOR_KIND
from worker import compute
from worker.celery_app import app
from worker.runner import run_job


@app.task(name=TASK_FOR_KIND["correlation"])
def correlate(job_id: str) -> None:
    # A correlation has no epochs to report: the runner's epoch callback is not passed on.
    run_job(job_id, CorrelationRequest, lambda request, device, _on_epoch: compute.correlate(request, device))


@app.task(name=TASK_FOR_KIND["kernel_training"])
def train_kernel(job_id: str) -> None:
    run_job(job_id, KernelTrainingRequest, compute.train)
