"""Clients generated from /openapi.json, untouched, by the generators people use, against the running stack.

openapi-python-client (PyPI, requirements/test.txt) and openapi-typescript (npm, tests/generators, installed by
`make test`'s setup with `npm ci`) read the document as the live API serves it. The generated Python client
submits the seed's correlation, the seed's training and an image upload as its typed models, and polls them to
success; the TypeScript types compile under `tsc --strict`.
"""

import importlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.seed import EDGE_IMAGE, EDGES, K_2X2, X_3X3, Y_3X3
from tests.support import REPO

GENERATORS = REPO / "tests" / "generators"
PACKAGE = "convq_generated"


@pytest.fixture(scope="module")
def document(live_stack, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_bytes(requests.get(f"{live_stack.url}/openapi.json", timeout=10).content)
    return path


@pytest.fixture(scope="module")
def generated(document, tmp_path_factory):
    """The package openapi-python-client generates, imported; generation must pass without a warning."""
    where = tmp_path_factory.mktemp("python-client")
    command = [Path(sys.executable).parent / "openapi-python-client", "generate", "--path", document]
    command += ["--output-path", where / PACKAGE, "--meta", "none", "--config", GENERATORS / "python-client.yaml"]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # its ruff hook formats
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Warning" not in output and "Unable to" not in output, output
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))


def module(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


def poll_to_success(generated, client, job):
    """GET the job through the generated client until it has finished; it must have succeeded."""
    get_job, status = module("api.default.get_v1_jobs_job_id"), module("models").JobStatus
    deadline = time.monotonic() + 30
    while job.status in (status.QUEUED, status.RUNNING) and time.monotonic() < deadline:
        time.sleep(0.05)
        job = get_job.sync(job.id, client=client)
    assert job.status == status.SUCCEEDED, job
    return job


@pytest.fixture
def client(generated, live_stack):
    with generated.Client(base_url=live_stack.url, raise_on_unexpected_status=True) as client:
        yield client


def test_the_generated_python_client_runs_the_seed_correlation(generated, client):
    models = module("models")
    body = models.CorrelationRequest(input_=X_3X3, kernel=K_2X2)
    job = module("api.default.post_v1_correlations").sync(client=client, body=body)
    assert isinstance(job, models.Job) and job.kind == models.JobKind.CORRELATION
    job = poll_to_success(generated, client, job)
    assert isinstance(job.result, models.CorrelationResult)
    assert job.result.output == Y_3X3 and job.result.shape == [2, 2]


def test_the_generated_python_client_learns_the_seed_edge_kernel(generated, client):
    models = module("models")
    body = models.KernelTrainingRequest(input_=EDGE_IMAGE, target=EDGES, kernel_size=[1, 2], lr=0.03, epochs=20)
    job = module("api.default.post_v1_kernel_trainings").sync(client=client, body=body)
    job = poll_to_success(generated, client, job)
    assert isinstance(job.result, models.TrainingResult)
    assert job.result.epochs_run == 20 and len(job.result.loss_history) == 20
    assert job.result.kernel[0] == pytest.approx([1, -1], abs=0.05)


def test_the_generated_python_client_uploads_an_image_as_its_multipart_model(generated, client):
    models, types = module("models"), module("types")
    picture = io.BytesIO()
    Image.new("L", (4, 3), 255).save(picture, format="PNG")  # white: 1.0 everywhere, no edge
    upload = types.File(payload=io.BytesIO(picture.getvalue()), file_name="white.png", mime_type="image/png")
    body = models.PostV1CorrelationsFilesBody(image=upload, kernel="[[1, -1]]")
    job = poll_to_success(generated, client, module("api.default.post_v1_correlations").sync(client=client, body=body))
    assert job.result.output == [[0.0] * 3] * 3


def test_openapi_typescript_generates_types_that_compile(document, tmp_path):
    binary = GENERATORS / "node_modules" / ".bin"
    assert (binary / "openapi-typescript").exists(), "run `make .venv/.test` (npm ci in tests/generators) first"
    types = tmp_path / "convq.d.ts"
    run = subprocess.run(
        [binary / "openapi-typescript", document, "--output", types], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warn" not in (run.stdout + run.stderr).lower(), run.stdout + run.stderr
    generated = types.read_text()
    for model in ("CorrelationRequest", "KernelTrainingRequest", "TrainingPair", "Base64Array", "Job", "Problem"):
        assert f"        {model}: {{" in generated
    assert '"multipart/form-data"' in generated and '"application/json": components["schemas"]' in generated
    compiled = subprocess.run(
        [binary / "tsc", "--noEmit", "--strict", types], cwd=GENERATORS, capture_output=True, text=True, timeout=120
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
