"""Every kind of bad input gets a specific 4xx problem+json pointing at the fault, and queues nothing."""

import base64
import io
import math
import struct
import time
import zipfile

import numpy as np
import orjson
import pytest
from numpy.lib import format as npy_format

from shared.jobstore import job_keys_pattern
from shared.taskqueue import QUEUE_NAMES
from tests.seed import EDGE_IMAGE, EDGES, K_2X2, X_3X3

CORRELATIONS, TRAININGS = "/v1/correlations", "/v1/kernel-trainings"
JSON = "application/json"
GOOD_CORRELATION = {"input": X_3X3, "kernel": K_2X2}
GOOD_TRAINING = {"input": EDGE_IMAGE, "target": EDGES, "kernel_size": [1, 2]}


def correlation(**changes):
    return {**GOOD_CORRELATION, **changes}


def training(**changes):
    body = {**GOOD_TRAINING, **changes}
    return {key: value for key, value in body.items() if value is not None}


def packed(shape: list[int], data: str, dtype: str = "float32") -> dict:
    return {"shape": shape, "dtype": dtype, "data": data}


FOUR_FLOATS = base64.b64encode(struct.pack("<4f", 1, 2, 3, 4)).decode()


def raw(text: str) -> bytes:
    return text.encode()


# (name, path, body: dict -> JSON, bytes -> as is, content type, status, locations the errors must name)
CASES = [
    ("body is not JSON", CORRELATIONS, raw('{"input": [[1]'), JSON, 400, []),
    ("empty body", CORRELATIONS, b"", JSON, 400, []),
    ("invalid UTF-8", CORRELATIONS, b'{"input": "\xff\xfe"}', JSON, 400, []),
    ("1000 unclosed brackets", CORRELATIONS, b"[" * 1000, JSON, 400, []),
    ("nesting deeper than the parser allows", CORRELATIONS, b"[" * 300 + b"]" * 300, JSON, 400, []),
    ("duplicate keys", CORRELATIONS, raw('{"input": [[1]], "kernel": [[1]], "input": [[2]]}'), JSON, 400, []),
    (
        "deep but parseable nesting in a matrix",
        CORRELATIONS,
        raw('{"input": ' + "[" * 150 + "]" * 150 + ', "kernel": [[1]]}'),
        JSON,
        422,
        ["/input"],
    ),
    (
        "deep but parseable nesting in an unknown field",
        CORRELATIONS,
        raw('{"input": [[1]], "kernel": [[1]], "x": ' + '{"a": ' * 150 + "1" + "}" * 150 + "}"),
        JSON,
        422,
        ["/x"],
    ),
    ("NaN literal", CORRELATIONS, raw('{"input": [[NaN]], "kernel": [[1]]}'), JSON, 400, []),
    ("Infinity literal", CORRELATIONS, raw('{"input": [[Infinity]], "kernel": [[1]]}'), JSON, 400, []),
    (
        "number too large for a double",
        CORRELATIONS,
        raw('{"input": [[1e999]], "kernel": [[1]]}'),
        JSON,
        422,
        ["/input/0/0"],
    ),
    ("wrong content type", CORRELATIONS, orjson.dumps(GOOD_CORRELATION), "text/plain", 415, []),
    ("no content type", CORRELATIONS, orjson.dumps(GOOD_CORRELATION), None, 415, []),
    ("body not an object", CORRELATIONS, [1, 2], JSON, 422, [""]),
    ("missing kernel", CORRELATIONS, {"input": X_3X3}, JSON, 422, ["/kernel"]),
    ("unknown field", CORRELATIONS, correlation(paddding=1), JSON, 422, ["/paddding"]),
    ("empty matrix", CORRELATIONS, correlation(input=[]), JSON, 422, ["/input"]),
    ("empty row", CORRELATIONS, correlation(input=[[]]), JSON, 422, ["/input/0"]),
    ("ragged matrix", CORRELATIONS, correlation(input=[[1, 2], [3, 4], [5]]), JSON, 422, ["/input/2"]),
    (
        "matrix not 2-D (a vector)",
        CORRELATIONS,
        correlation(input=[1, 2]),
        JSON,
        422,
        ["/input/0", "/input/1"],
    ),
    ("kernel with 2 channels on a 2-D input", CORRELATIONS, correlation(kernel=[[[1]], [[1]]]), JSON, 422, ["/kernel"]),
    ("kernel of 5 dimensions", CORRELATIONS, correlation(kernel=[[[[[1]]]]]), JSON, 422, ["/kernel"]),
    ("input of 4 dimensions", CORRELATIONS, correlation(input=[[[[1]]]]), JSON, 422, ["/input"]),
    ("channels of different heights", CORRELATIONS, correlation(input=[[[1]], [[1], [2]]]), JSON, 422, ["/input/1"]),
    ("a 2-D kernel on channels", CORRELATIONS, correlation(input=[X_3X3, X_3X3]), JSON, 422, ["/kernel"]),
    (
        "kernel channels unlike the input's",
        CORRELATIONS,
        correlation(input=[X_3X3, X_3X3], kernel=[K_2X2] * 3),
        JSON,
        422,
        ["/kernel"],
    ),
    ("a bias per channel of a 3-D kernel", CORRELATIONS, correlation(kernel=[K_2X2], bias=[1]), JSON, 422, ["/bias"]),
    (
        "fewer biases than output channels",
        CORRELATIONS,
        correlation(kernel=[[K_2X2]] * 2, bias=[1.0]),
        JSON,
        422,
        ["/bias"],
    ),
    ("a bias list holding a string", CORRELATIONS, correlation(bias=[1, "2"]), JSON, 422, ["/bias/1"]),
    ("matrix not a list", CORRELATIONS, correlation(input="[[1]]"), JSON, 422, ["/input"]),
    (
        "non-number element",
        CORRELATIONS,
        correlation(input=[[0, "1"], [2, 3]]),
        JSON,
        422,
        ["/input/0/1"],
    ),
    ("boolean element", CORRELATIONS, correlation(kernel=[[True]]), JSON, 422, ["/kernel/0/0"]),
    ("null element", CORRELATIONS, correlation(kernel=[[None]]), JSON, 422, ["/kernel/0/0"]),
    (
        "element beyond float32",
        CORRELATIONS,
        correlation(input=[[1e39]], kernel=[[1]]),
        JSON,
        422,
        ["/input/0/0"],
    ),
    ("base64 array, not base64", CORRELATIONS, correlation(input=packed([1, 1], "!!!!")), JSON, 422, ["/input/data"]),
    (
        "base64 array, data and shape disagree",
        CORRELATIONS,
        correlation(input=packed([3, 3], FOUR_FLOATS)),
        JSON,
        422,
        ["/input/data"],
    ),
    (
        "base64 array, an infinite element",
        CORRELATIONS,
        correlation(input=packed([1, 1], base64.b64encode(struct.pack("<f", math.inf)).decode())),
        JSON,
        422,
        ["/input/data"],
    ),
    (
        "base64 array, float64 beyond float32",
        CORRELATIONS,
        correlation(input=packed([1, 1], base64.b64encode(struct.pack("<d", 1e39)).decode(), "float64")),
        JSON,
        422,
        ["/input/data"],
    ),
    (
        "base64 array, unknown dtype",
        CORRELATIONS,
        correlation(input=packed([2, 2], FOUR_FLOATS, "int8")),
        JSON,
        422,
        ["/input/dtype"],
    ),
    ("base64 array, zero rows", CORRELATIONS, correlation(input=packed([0, 4], "")), JSON, 422, ["/input/shape/0"]),
    (
        "base64 array, unknown field",
        CORRELATIONS,
        correlation(input={**packed([2, 2], FOUR_FLOATS), "order": "F"}),
        JSON,
        422,
        ["/input/order"],
    ),
    ("unknown result format", CORRELATIONS, correlation(result_format="csv"), JSON, 422, ["/result_format"]),
    ("kernel larger than input", CORRELATIONS, correlation(kernel=[[1] * 4]), JSON, 422, ["/kernel"]),
    (
        "kernel larger than padded input",
        CORRELATIONS,
        correlation(kernel=[[1] * 6] * 6, padding=1),
        JSON,
        422,
        ["/kernel"],
    ),
    ("negative padding", CORRELATIONS, correlation(padding=-1), JSON, 422, ["/padding/0", "/padding/1"]),
    ("negative padding in a pair", CORRELATIONS, correlation(padding=[0, -2]), JSON, 422, ["/padding/1"]),
    ("padding of three", CORRELATIONS, correlation(padding=[1, 1, 1]), JSON, 422, ["/padding"]),
    ("padding as a string", CORRELATIONS, correlation(padding="1"), JSON, 422, ["/padding"]),
    ("fractional stride", CORRELATIONS, correlation(stride=1.5), JSON, 422, ["/stride/0", "/stride/1"]),
    ("stride below 1", CORRELATIONS, correlation(stride=[1, 0]), JSON, 422, ["/stride/1"]),
    ("bias as a string", CORRELATIONS, correlation(bias="0.5"), JSON, 422, ["/bias"]),
    (
        "matrix over the element limit",
        CORRELATIONS,
        correlation(input=[[0] * 101] * 100),
        JSON,
        422,
        ["/input"],
    ),
    ("body over the size limit", CORRELATIONS, b" " * 1_000_001, JSON, 413, []),
    (
        "both target and target_kernel",
        TRAININGS,
        training(target_kernel=[[1, -1]]),
        JSON,
        422,
        ["/target"],
    ),
    ("neither target nor target_kernel", TRAININGS, training(target=None), JSON, 422, ["/target"]),
    ("target of the wrong shape", TRAININGS, training(target=EDGES[:5]), JSON, 422, ["/target"]),
    (
        "kernel_size missing with target",
        TRAININGS,
        training(kernel_size=None),
        JSON,
        422,
        ["/kernel_size"],
    ),
    (
        "kernel_size disagrees with target_kernel",
        TRAININGS,
        training(target=None, target_kernel=[[1, -1]], kernel_size=[2, 1]),
        JSON,
        422,
        ["/kernel_size"],
    ),
    (
        "kernel larger than the input",
        TRAININGS,
        training(target=None, kernel_size=None, target_kernel=[[1] * 9]),
        JSON,
        422,
        ["/target_kernel"],
    ),
    ("kernel_size of zero", TRAININGS, training(kernel_size=[0, 2]), JSON, 422, ["/kernel_size/0"]),
    ("epochs below 1", TRAININGS, training(epochs=0), JSON, 422, ["/epochs"]),
    ("epochs over the limit", TRAININGS, training(epochs=100_001), JSON, 422, ["/epochs"]),
    ("fractional epochs", TRAININGS, training(epochs=2.5), JSON, 422, ["/epochs"]),
    ("epochs as a string", TRAININGS, training(epochs="20"), JSON, 422, ["/epochs"]),
    ("lr of zero", TRAININGS, training(lr=0), JSON, 422, ["/lr"]),
    ("negative lr", TRAININGS, training(lr=-0.1), JSON, 422, ["/lr"]),
    ("lr as a boolean", TRAININGS, training(lr=True), JSON, 422, ["/lr"]),
    ("lr beyond float32", TRAININGS, training(lr=1e300), JSON, 422, ["/lr"]),
    ("bias flag as a string", TRAININGS, training(bias="yes"), JSON, 422, ["/bias"]),
    ("negative seed", TRAININGS, training(seed=-1), JSON, 422, ["/seed"]),
    (
        "pairs beside an input",
        TRAININGS,
        training(pairs=[{"input": EDGE_IMAGE, "target": EDGES}]),
        JSON,
        422,
        ["/pairs"],
    ),
    ("no pairs at all", TRAININGS, training(input=None, target=None, pairs=[]), JSON, 422, ["/pairs"]),
    (
        "a pair without its target",
        TRAININGS,
        training(input=None, target=None, pairs=[{"input": EDGE_IMAGE, "target": EDGES}, {"input": X_3X3}]),
        JSON,
        422,
        ["/pairs/1/target"],
    ),
    (
        "a pair's input unlike the first",
        TRAININGS,
        training(
            input=None, target=None, pairs=[{"input": EDGE_IMAGE, "target": EDGES}, {"input": X_3X3, "target": [[1]]}]
        ),
        JSON,
        422,
        ["/pairs/1/input"],
    ),
    (
        "a pair's target of the wrong shape",
        TRAININGS,
        training(input=None, target=None, pairs=[{"input": EDGE_IMAGE, "target": EDGE_IMAGE}]),
        JSON,
        422,
        ["/pairs/0/target"],
    ),
    (
        "a target beside pairs",
        TRAININGS,
        training(input=None, pairs=[{"input": EDGE_IMAGE, "target": EDGES}]),
        JSON,
        422,
        ["/target"],
    ),
    ("kernel_size and kernel_shape", TRAININGS, training(kernel_shape=[1, 2]), JSON, 422, ["/kernel_shape"]),
    (
        "kernel_shape's channels unlike the input's",
        TRAININGS,
        training(kernel_size=None, kernel_shape=[2, 1, 2]),
        JSON,
        422,
        ["/kernel_shape"],
    ),
    (
        "kernel_shape of 5 dimensions",
        TRAININGS,
        training(kernel_size=None, kernel_shape=[1] * 5),
        JSON,
        422,
        ["/kernel_shape"],
    ),
    ("batch_size of zero", TRAININGS, training(batch_size=0), JSON, 422, ["/batch_size"]),
    ("an unknown optimizer", TRAININGS, training(optimizer="rmsprop"), JSON, 422, ["/optimizer"]),
    ("momentum of 1", TRAININGS, training(optimizer="momentum", momentum=1), JSON, 422, ["/momentum"]),
    ("an unknown loss", TRAININGS, training(loss="max"), JSON, 422, ["/loss"]),
    ("a negative tolerance", TRAININGS, training(tolerance=-1), JSON, 422, ["/tolerance"]),
    ("shuffle as a string", TRAININGS, training(shuffle="yes"), JSON, 422, ["/shuffle"]),
    # Bounds on every whole number, and on what a job may cost.
    (
        "a stride of 10^30",
        CORRELATIONS,
        raw('{"input": [[1, 2]], "kernel": [[1]], "stride": 1000000000000000000000000000000}'),
        JSON,
        422,
        ["/stride/0", "/stride/1"],
    ),
    ("a padding of 2^25", CORRELATIONS, correlation(padding=[0, 2**25]), JSON, 422, ["/padding/1"]),
    ("padding that makes the output too big", CORRELATIONS, correlation(padding=60), JSON, 422, ["/padding"]),
    ("a kernel side of 2^24 + 1", TRAININGS, training(kernel_size=[2**24 + 1, 1]), JSON, 422, ["/kernel_size/0"]),
    ("epochs of 10^9 + 1", TRAININGS, training(epochs=10**9 + 1), JSON, 422, ["/epochs"]),
    ("batch_size of 2^24 + 1", TRAININGS, training(batch_size=2**24 + 1), JSON, 422, ["/batch_size"]),
    (
        "a training that would outrun the time limit",
        TRAININGS,
        {"pairs": [{"input": [[1, 2], [3, 4]], "target": [[1]]}] * 1000, "kernel_size": [2, 2], "batch_size": 1}
        | {"epochs": 10_000},
        JSON,
        422,
        [""],
    ),
    # Long arrays, read straight into float32 (api/bulk.py), are refused at the array or its element.
    ("a long ragged array", CORRELATIONS, correlation(input=[[0] * 50] * 99 + [[0] * 49]), JSON, 422, ["/input"]),
    ("a long array over the element limit", CORRELATIONS, correlation(input=[[0] * 100] * 120), JSON, 422, ["/input"]),
    ("a long array of 5 dimensions", CORRELATIONS, correlation(input=[[[[[0] * 600]]]]), JSON, 422, ["/input"]),
    (
        "a long array with an element beyond float32",
        CORRELATIONS,
        correlation(input=[[0] * 50] * 3 + [[0] * 7 + [1e39] + [0] * 42] + [[0] * 50] * 10),
        JSON,
        422,
        ["/input/3/7"],
    ),
    (
        "a long array with a number that is not JSON",
        CORRELATIONS,
        raw('{"kernel": [[1]], "input": [[' + "0," * 600 + "+1]]}"),
        JSON,
        400,
        [],
    ),
    (
        "long base64 data of a wrong length",
        CORRELATIONS,
        correlation(input=packed([2, 2], "A" * 1025)),
        JSON,
        422,
        ["/input/data"],
    ),
    ("150,000 numbers outside matrices", CORRELATIONS, correlation(x=[0] * 150_000), JSON, 413, []),
]


def queued_state(redis) -> tuple[int, int]:
    """How many job keys exist and how many messages wait in the queue."""
    return len(list(redis.scan_iter(job_keys_pattern(), count=1000))), redis.llen(QUEUE_NAMES["cpu"])


@pytest.mark.parametrize("name,path,body,content_type,status,locations", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_refused_with_a_problem_and_changes_nothing(
    client, redis_server, name, path, body, content_type, status, locations
):
    redis = redis_server.client()
    before = queued_state(redis)
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, data=data, headers=headers)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    reported = [error["loc"] for error in problem.get("errors", [])]
    assert reported == locations, problem
    assert queued_state(redis) == before


def test_an_oversized_body_is_refused_naming_the_limit(client):
    response = client.post(CORRELATIONS, data=b" " * 1_000_001, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.get_json()["detail"] == "the body is over this server's limit of 1000000 bytes (MAX_BODY_BYTES)"


def test_many_faults_are_reported_but_the_list_is_capped(client):
    response = client.post(CORRELATIONS, json=correlation(input=[["x"] * 90] * 90))
    problem = response.get_json()
    assert response.status_code == 422
    assert len(problem["errors"]) == 50
    assert problem["detail"] == "the request has 8100 errors; the first 50 are listed"


def test_an_unknown_job_is_404_problem(client):
    for path in ["/v1/jobs/8a4c1f0e-6a4c-4d8e-9d1b-0f4b5c8e2a11", "/v1/jobs/not-a-job-id", "/v1/jobs/x/loss"]:
        response = client.get(path)
        assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert client.delete("/v1/jobs/8a4c1f0e-6a4c-4d8e-9d1b-0f4b5c8e2a11").status_code == 404


def test_unknown_routes_and_methods_are_problems_too(client):
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    wrong_method = client.put(CORRELATIONS, json=GOOD_CORRELATION)
    assert wrong_method.status_code == 405 and wrong_method.mimetype == "application/problem+json"
    assert "POST" in wrong_method.headers["Allow"]


def npy(array, dtype="<f4", **save) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=dtype), **save)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """Just the header of an .npy that claims `shape`: the data is the caller's to add (or not)."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in arrays.items():
            archive.writestr(f"{name}.npy", data)
    return buffer.getvalue()


GOOD_X, GOOD_K = npy(X_3X3), npy(K_2X2)
# (name, path, files as .npy bytes, form fields, status, locations the errors must name)
NPY_CASES = [
    ("npy of int32", CORRELATIONS, {"input": npy(X_3X3, "<i4"), "kernel": GOOD_K}, {}, 422, ["/input"]),
    ("npy of complex", CORRELATIONS, {"input": npy(X_3X3, "<c16"), "kernel": GOOD_K}, {}, 422, ["/input"]),
    ("npy of float16", CORRELATIONS, {"input": GOOD_X, "kernel": npy(K_2X2, "<f2")}, {}, 422, ["/kernel"]),
    (
        "npy object array (a pickle)",
        CORRELATIONS,
        {"input": npy([[1, "a"]], object, allow_pickle=True), "kernel": GOOD_K},
        {},
        422,
        ["/input"],
    ),
    ("npy structured", CORRELATIONS, {"input": npy_header((1, 1), "[('a', '<f4')]") + b"\0" * 4}, {}, 422, ["/input"]),
    ("npy truncated data", CORRELATIONS, {"input": GOOD_X[:-5], "kernel": GOOD_K}, {}, 422, ["/input"]),
    ("npy truncated header", CORRELATIONS, {"input": GOOD_X[:20], "kernel": GOOD_K}, {}, 422, ["/input"]),
    (
        "npy with data after its shape",
        CORRELATIONS,
        {"input": GOOD_X + b"\0" * 4, "kernel": GOOD_K},
        {},
        422,
        ["/input"],
    ),
    (
        "npy header claiming 2^40 x 2^40 on a short body",
        CORRELATIONS,
        {"input": npy_header((2**40, 2**40)) + b"\0" * 16, "kernel": GOOD_K},
        {},
        422,
        ["/input"],
    ),
    (
        "npy header within the limit on a short body",
        CORRELATIONS,
        {"input": npy_header((100, 100)) + b"\0" * 16, "kernel": GOOD_K},
        {},
        422,
        ["/input"],
    ),
    ("not an npy at all", CORRELATIONS, {"input": GOOD_X, "kernel": b"[[1, -1]]"}, {}, 422, ["/kernel"]),
    ("npy of one dimension", CORRELATIONS, {"input": npy([1, 2, 3]), "kernel": GOOD_K}, {}, 422, ["/input"]),
    ("npy of zero rows", CORRELATIONS, {"input": npy(np.zeros((0, 3))), "kernel": GOOD_K}, {}, 422, ["/input"]),
    ("npy with a NaN", CORRELATIONS, {"input": npy([[1, np.nan]]), "kernel": npy([[1]])}, {}, 422, ["/input/0/1"]),
    (
        "npy float64 beyond float32",
        CORRELATIONS,
        {"input": npy([[1e300]], "<f8"), "kernel": npy([[1]])},
        {},
        422,
        ["/input/0/0"],
    ),
    (
        "npy kernel larger than input",
        CORRELATIONS,
        {"input": GOOD_X, "kernel": npy(np.ones((4, 4)))},
        {},
        422,
        ["/kernel"],
    ),
    ("an unknown file", CORRELATIONS, {"input": GOOD_X, "kernel": GOOD_K, "bias": npy([[1]])}, {}, 422, ["/bias"]),
    (
        "input as a file and in the request part",
        CORRELATIONS,
        {"input": GOOD_X, "kernel": GOOD_K, "request": b'{"input": [[1]]}'},
        {},
        422,
        ["/input"],
    ),
    ("request part not an object", CORRELATIONS, {"input": GOOD_X, "request": b"[1]"}, {}, 422, ["/request"]),
    ("request part not JSON", CORRELATIONS, {"input": GOOD_X, "request": b"{"}, {}, 422, ["/request"]),
    (
        "a long ragged array in the request part",
        CORRELATIONS,
        {"input": GOOD_X, "request": orjson.dumps({"kernel": [[0] * 50] * 99 + [[0] * 49]})},
        {},
        422,
        ["/kernel"],
    ),
    (
        "npy training of int64",
        TRAININGS,
        {"input": npy(EDGE_IMAGE, "<i8"), "target": npy(EDGES)},
        {"kernel_size": "[1, 2]"},
        422,
        ["/input"],
    ),
    (
        "npy target of the wrong shape",
        TRAININGS,
        {"input": npy(EDGE_IMAGE), "target": npy(EDGES[:5])},
        {"kernel_size": "[1, 2]"},
        422,
        ["/target"],
    ),
    ("pairs not a zip", TRAININGS, {"pairs": GOOD_X}, {"kernel_size": "[1, 2]"}, 422, ["/pairs"]),
    (
        "pairs without inputs",
        TRAININGS,
        {"pairs": npz(targets=npy([EDGES]))},
        {"kernel_size": "[1, 2]"},
        422,
        ["/pairs/inputs"],
    ),
    (
        "pairs with another member",
        TRAININGS,
        {"pairs": npz(inputs=npy([EDGE_IMAGE]), x=GOOD_X)},
        {"kernel_size": "[1, 2]"},
        422,
        ["/pairs/x"],
    ),
    (
        "pairs claiming a huge shape",
        TRAININGS,
        {"pairs": npz(inputs=npy_header((2**30, 100, 100)) + b"\0" * 64)},
        {"kernel_size": "[1, 2]"},
        422,
        ["/pairs/inputs"],
    ),
    (
        "pairs of unequal counts",
        TRAININGS,
        {"pairs": npz(inputs=npy([EDGE_IMAGE] * 2), targets=npy([EDGES]))},
        {"kernel_size": "[1, 2]"},
        422,
        ["/pairs/targets"],
    ),
    (
        "pairs of object arrays",
        TRAININGS,
        {"pairs": npz(inputs=npy([[[1, "a"]]], object, allow_pickle=True))},
        {},
        422,
        ["/pairs/inputs"],
    ),
    (
        "pairs whose target misses",
        TRAININGS,
        {"pairs": npz(inputs=npy([EDGE_IMAGE]), targets=npy([EDGES[:5]]))},
        {"kernel_size": "[1, 2]"},
        422,
        ["/pairs/0/target"],
    ),
]


@pytest.mark.parametrize("name,path,files,fields,status,locations", NPY_CASES, ids=[case[0] for case in NPY_CASES])
def test_bad_npy_is_refused_at_its_location_and_changes_nothing(
    client, redis_server, name, path, files, fields, status, locations
):
    redis = redis_server.client()
    before = queued_state(redis)
    form = {part: (io.BytesIO(data), f"{part}.npy") for part, data in files.items()} | fields
    started = time.monotonic()
    response = client.post(path, data=form, content_type="multipart/form-data")

    assert time.monotonic() - started < 2  # a huge claimed shape is refused from the header, not read
    assert response.status_code == status, response.get_json()
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert [error["loc"] for error in problem.get("errors", [])] == locations, problem
    assert queued_state(redis) == before
