"""The `convq` command as people and scripts run it: a real process against the whole stack over HTTP."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pexpect
import pytest
import requests
from PIL import Image

from client import Client
from tests.seed import EDGE_IMAGE, EDGES, K_2X2, X_3X3, Y_3X3
from tests.support import free_port, wait_until
from tests.test_client import (
    K_2CH,
    K_3X2CH,
    PAIRS_OPTIONS,
    X_2CH,
    Y_2CH,
    Y_3CH_BIASED,
    long_training_input,
    pairs_of_a_known_kernel,
)

CONVQ = Path(sys.executable).parent / "convq"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def convq(live_stack, tmp_path):
    """Run convq against the live stack in tmp_path; return the finished process (text stdout and stderr)."""

    def run(*args: str, url: str = live_stack.url) -> subprocess.CompletedProcess:
        env = os.environ | {"CONVQ_URL": url}
        return subprocess.run([CONVQ, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    return run


@pytest.fixture
def api(live_stack):
    with Client(live_stack.url) as client:
        yield client


def write_matrix(directory: Path, name: str, matrix) -> str:
    """Write the matrix as name's extension says: .json (nested lists), .csv or .npy."""
    path = directory / name
    if path.suffix == ".json":
        path.write_text(json.dumps(matrix))
    elif path.suffix == ".csv":
        np.savetxt(path, np.array(matrix), delimiter=",")
    else:
        np.save(path, np.array(matrix))
    return name


def submit_json(convq, *args: str) -> dict:
    run = convq(*args, "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def table_rows(stdout: str) -> list[list[str]]:
    """The numbers of each row of the tables printed."""
    return [re.findall(r"-?\d+", line) for line in stdout.splitlines() if "│" in line]


def pairs_options() -> list[str]:
    """PAIRS_OPTIONS as command-line options."""
    options = [f"--{name.replace('_', '-')}={value}" for name, value in PAIRS_OPTIONS.items() if name != "shuffle"]
    return [*options, "--shuffle"] if PAIRS_OPTIONS["shuffle"] else options


@pytest.mark.parametrize("extension", [".json", ".csv", ".npy"])
def test_correlate_the_seed_example_from_a_file_prints_plain_json(convq, tmp_path, extension):
    x = write_matrix(tmp_path, "x" + extension, X_3X3)
    k = write_matrix(tmp_path, "k" + extension, K_2X2)
    run = convq("correlate", "-i", x, "-k", k, "--wait", "--json")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)  # stdout holds the JSON and nothing else
    assert job["status"] == "succeeded" and job["result"]["output"] == Y_3X3


def test_correlate_shows_the_output_as_a_table_for_people(convq, tmp_path):
    run = convq("correlate", "-i", write_matrix(tmp_path, "x.json", X_3X3), "-k", "k.json", "--wait")
    assert run.returncode == 2 and "k.json" in run.stderr  # the kernel file is not there yet

    run = convq("correlate", "-i", "x.json", "-k", write_matrix(tmp_path, "k.json", K_2X2), "--wait")
    assert run.returncode == 0, run.stderr
    assert re.search(r"job [0-9a-f-]{36} succeeded", run.stdout)
    assert "output, 2 x 2:" in run.stdout
    assert table_rows(run.stdout) == [["19", "25"], ["37", "43"]]


def test_correlate_the_chapters_two_channel_example_from_npy_and_json(convq, tmp_path):
    x, k = write_matrix(tmp_path, "x.npy", X_2CH), write_matrix(tmp_path, "k.json", K_2CH)  # C x H x W, C x kh x kw
    job = submit_json(convq, "correlate", "-i", x, "-k", k, "--device", "cpu", "--wait")
    assert job["status"] == "succeeded" and job["result"]["output"] == Y_2CH
    assert job["queue"] == "cpu" and job["device"] == "cpu"


def test_three_output_channels_with_a_bias_each_are_shown_channel_by_channel(convq, tmp_path):
    x, k = write_matrix(tmp_path, "x.json", X_2CH), write_matrix(tmp_path, "k.npy", K_3X2CH)  # O x C x kh x kw
    job = submit_json(convq, "correlate", "-i", x, "-k", k, "--bias", "1,0,-1", "--wait")
    assert job["result"]["output"] == Y_3CH_BIASED

    run = convq("correlate", "-i", x, "-k", k, "--bias", "1,0,-1", "--wait")
    assert run.returncode == 0, run.stderr
    assert "output, 3 x 2 x 2, channel by channel:" in run.stdout
    for channel in range(3):
        assert f"output: channel {channel} of 3, 2 x 2:" in run.stdout
    assert table_rows(run.stdout) == [[str(int(number)) for number in row] for out in Y_3CH_BIASED for row in out]


def test_a_kernel_by_name_and_the_options(convq, tmp_path):
    x = write_matrix(tmp_path, "edge.json", EDGE_IMAGE)
    assert submit_json(convq, "correlate", "-i", x, "-k", "edge", "--wait")["result"]["output"] == EDGES
    job = submit_json(convq, "correlate", "-i", x, "-k", "edge", "--padding", "0x1", "--stride", "2", "--bias", "1")
    assert job["status"] in ("queued", "running", "succeeded")

    unknown = convq("correlate", "-i", x, "-k", "no-such-kernel")
    assert unknown.returncode == 2 and "sobel-x" in unknown.stderr  # the names there are
    for bias in ("1,,2", "nan"):
        wrong = convq("correlate", "-i", x, "-k", "edge", "--bias", bias)
        assert wrong.returncode == 2 and "Invalid value for '--bias'" in wrong.stderr


def test_submit_then_show_list_and_cancel(convq, tmp_path, live_stack):
    x = write_matrix(tmp_path, "x.json", X_3X3)
    run = convq("correlate", "-i", x, "-k", write_matrix(tmp_path, "k.json", K_2X2))
    assert run.returncode == 0, run.stderr
    job_id = re.search(r"job ([0-9a-f-]{36}) (queued|running|succeeded)", run.stdout).group(1)
    assert f"convq show {job_id}" in run.stdout

    listed = submit_json(convq, "jobs", "--kind", "correlation", "--limit", "1")
    assert [job["id"] for job in listed] == [job_id] and "result" not in listed[0]  # as GET /v1/jobs lists it
    table = convq("jobs", "--limit", "3")
    assert table.returncode == 0 and job_id in table.stdout and "correlation" in table.stdout

    shown = convq("show", job_id, "--json")
    returned = requests.get(f"{live_stack.url}/v1/jobs/{job_id}", timeout=10).text
    assert shown.stdout == returned  # what the API returned, to the byte: result.shape, times in Z, newline
    people = convq("show", job_id)
    assert people.returncode == 0 and re.search(r"kind\s+correlation", people.stdout)
    assert re.search(r"queue\s+cpu", people.stdout) and re.search(r"device\s+cpu", people.stdout)
    assert re.search(rf"{job_id}\s+correlation\s+succeeded\s+\S+ \S+\s+cpu\s+cpu", table.stdout)

    cancelled = convq("--json", "cancel", job_id)  # the global --json, before the command
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["id"] == job_id
    assert "already finished" in convq("cancel", job_id).stdout  # it had succeeded: nothing to cancel


def test_exit_code_1_when_the_job_fails_or_is_cancelled(convq, tmp_path, api, live_stack):
    x = write_matrix(tmp_path, "edge.json", EDGE_IMAGE)
    run = convq("train", "-i", x, "--target-kernel", "edge", "--lr", "1e6", "--epochs", "50", "--wait", "--json")
    assert run.returncode == 1
    assert json.loads(run.stdout)["status"] == "failed" and "Training diverged" in run.stderr

    np.save(tmp_path / "big.npy", long_training_input())
    args = ["train", "-i", "big.npy", "--target-kernel", "box-blur", "--lr", "1e-8", "--epochs", "10000", "--wait"]
    before = newest_training(api)
    waiting = subprocess.Popen(
        [CONVQ, *args, "--json"],
        cwd=tmp_path,
        env=os.environ | {"CONVQ_URL": live_stack.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    job_id = wait_until(lambda: (newest := newest_training(api)) != before and newest, 30, "the job")
    stopping = convq("cancel", job_id)
    assert stopping.returncode == 0 and re.search("stopping|cancelled", stopping.stdout)
    stdout, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 1, stderr
    assert json.loads(stdout)["status"] == "cancelled"


def newest_training(api: Client) -> str | None:
    return next((job.id for job in api.jobs(kind="kernel_training", limit=1)), None)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("missing.json", None, "cannot read"),
        ("x.json", "[[1, 2], [3, 4]", "Expecting"),
        ("x.txt", "1 2", "not a matrix file"),
        ("x.csv", "1,2\n3\n", "number of columns"),
        ("x.csv", "1,a\n", "could not convert"),
        ("x.json", "[[1, NaN]]", "NaN is not a JSON number"),
        ("x.npy", np.arange(3.0), "not a 2-D, 3-D or 4-D array"),
    ],
)
def test_exit_code_2_for_an_unreadable_or_invalid_matrix_file(convq, tmp_path, name, content, says):
    if isinstance(content, str):
        (tmp_path / name).write_text(content)
    elif content is not None:
        np.save(tmp_path / name, content)
    run = convq("correlate", "-i", name, "-k", "edge")
    assert run.returncode == 2 and "Invalid value for '-i' / '--input'" in run.stderr and says in run.stderr
    assert run.stdout == ""


def test_exit_code_2_for_a_training_without_its_target(convq, tmp_path):
    x = write_matrix(tmp_path, "edge.json", EDGE_IMAGE)
    assert convq("train", "-i", x).returncode == 2
    assert "--kernel-size" in convq("train", "-i", x, "--target", x).stderr


def test_train_on_pairs_converges(convq, tmp_path):
    kernel, pairs = pairs_of_a_known_kernel()
    (tmp_path / "pairs.json").write_text(json.dumps([{"input": x.tolist(), "target": y.tolist()} for x, y in pairs]))
    args = ["train", "--pairs", "pairs.json", "--epochs", "2000", *pairs_options()]
    job = submit_json(convq, *args, "--kernel-size", "2x2", "--wait")
    result = job["result"]
    assert job["status"] == "succeeded" and result["converged"] and result["epochs_run"] < 2000
    np.testing.assert_allclose(result["kernel"], kernel, atol=0.01)

    np.savez(tmp_path / "pairs.npz", inputs=[x for x, _ in pairs], targets=[y for _, y in pairs])
    args[2] = "pairs.npz"
    run = convq(*args, "--kernel-shape", "1x2x2x2", "--wait")
    assert run.returncode == 0, run.stderr
    assert "learned kernel, 1 x 2 x 2 x 2, channel by channel:" in run.stdout
    assert "learned kernel: output channel 0 of 1, input channel 1 of 2, 2 x 2:" in run.stdout
    assert re.search(r"after \d+ epochs, converged", run.stdout)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("pairs.json", '{"input": [[1]], "target": [[1]]}', "holds no pairs"),
        ("pairs.json", "[]", "holds no pairs"),
        ("pairs.txt", "[]", "not a pairs file"),
        ("pairs.npz", {"x": np.ones((2, 3, 3))}, "holds x: give arrays inputs"),
        ("pairs.npz", {"inputs": np.ones((2, 3, 3)), "targets": np.ones((3, 2, 2))}, "give one target each"),
        ("pairs.npz", {"inputs": np.ones((3, 3))}, "inputs is a 3 x 3 array of float64, not N x H x W"),
        ("pairs.npz", np.ones((2, 3, 3)), "is no .npz archive"),
    ],
)
def test_exit_code_2_for_a_bad_pairs_file(convq, tmp_path, name, content, says):
    if isinstance(content, str):
        (tmp_path / name).write_text(content)
    elif isinstance(content, dict):
        np.savez(tmp_path / name, **content)
    else:
        with open(tmp_path / name, "wb") as file:
            np.save(file, content)  # a .npy under the name of an .npz
    run = convq("train", "--pairs", name, "--kernel-size", "2")
    assert run.returncode == 2 and "Invalid value for '--pairs'" in run.stderr and says in run.stderr


def test_exit_code_2_for_examples_given_twice_or_not_at_all(convq, tmp_path):
    (tmp_path / "pairs.json").write_text(json.dumps([{"input": X_3X3, "target": Y_3X3}]))
    x = write_matrix(tmp_path, "x.json", X_3X3)
    assert "-i/--input or --pairs" in convq("train", "--kernel-size", "2").stderr
    assert "-i/--input or --pairs" in convq("train", "-i", x, "--pairs", "pairs.json", "--kernel-size", "2").stderr
    with_target = convq("train", "--pairs", "pairs.json", "--target", x, "--kernel-size", "2")
    assert with_target.returncode == 2 and "each pair holds its target" in with_target.stderr


def test_exit_code_3_when_the_api_refuses_and_says_where(convq, tmp_path):
    ragged = write_matrix(tmp_path, "ragged.json", [[1.0, 2.0], [3.0]])
    run = convq("correlate", "-i", ragged, "-k", "edge", "--wait")
    assert run.returncode == 3 and run.stdout == ""
    assert "Invalid request (422)" in run.stderr
    assert "/input/1: row 1 has length 1 but row 0 has length 2" in run.stderr

    unknown = convq("show", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 3 and "Not Found (404)" in unknown.stderr


def test_exit_code_3_when_the_api_refuses_a_pair(convq, tmp_path):
    pairs = [{"input": X_2CH, "target": Y_2CH}, {"input": X_3X3, "target": Y_2CH}]  # the second input is 2-D
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    run = convq("train", "--pairs", "pairs.json", "--kernel-size", "2x2", "--wait")
    assert run.returncode == 3 and run.stdout == ""
    assert "/pairs/1/input: pairs[1].input is 3 x 3 but pairs[0].input is 2 x 3 x 3" in run.stderr


def test_exit_code_4_when_nothing_listens(convq):
    run = convq("jobs", url=f"http://127.0.0.1:{free_port()}")
    assert run.returncode == 4 and "cannot reach the convq API" in run.stderr


def test_the_exit_codes_are_in_the_help(convq):
    run = convq("--help")
    assert run.returncode == 0
    for code in ("0", "1", "2", "3", "4", "130"):
        assert re.search(rf"^\s+{code}\s+\w", run.stdout, re.MULTILINE), code


def test_edges_writes_the_output_as_a_png(convq, tmp_path):
    pixels = np.zeros((12, 20), dtype=np.uint8)
    pixels[:, 8:14] = 255
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    run = convq("edges", "photo.png", "-o", "edges.png")
    assert run.returncode == 0, run.stderr
    assert "wrote edges.png, 19 x 12 pixels" in run.stdout
    with Image.open(tmp_path / "edges.png") as edges:
        assert edges.format == "PNG" and edges.size == (19, 12)

    sobel = submit_json(convq, "edges", "photo.png", "-o", "sobel.png", "--kernel", "sobel-x", "--device", "cpu")
    assert sobel["status"] == "succeeded" and (tmp_path / "sobel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sobel["device"] == "cpu"

    two = write_matrix(tmp_path, "two.json", [[[[1.0, -1.0]]], [[[-1.0, 1.0]]]])  # 2 x 1 x 1 x 2: two outputs
    run = convq("edges", "photo.png", "-o", "two.png", "--kernel", two)
    assert run.returncode == 0, run.stderr
    assert "wrote two.png, 2 channels of 19 x 12 pixels side by side" in run.stdout
    with Image.open(tmp_path / "two.png") as both:
        assert both.size == (2 * 19 + 1, 12)  # a white column apart


def spawn_in_terminal(live_stack, tmp_path, *args: str) -> pexpect.spawn:
    env = os.environ | {"CONVQ_URL": live_stack.url, "TERM": "xterm-256color", "COLUMNS": "120"}
    return pexpect.spawn(str(CONVQ), list(args), cwd=str(tmp_path), env=env, encoding="utf-8", timeout=60)


def test_train_shows_a_live_progress_bar_in_a_terminal(live_stack, tmp_path):
    x = write_matrix(tmp_path, "edge.json", EDGE_IMAGE)
    terminal = spawn_in_terminal(live_stack, tmp_path, "train", "-i", x, "--target-kernel", "edge", "--epochs", "5000")
    terminal.expect(r"job ([0-9a-f-]{36}) (queued|running)")  # without --wait: the job, and no bar
    terminal.expect(pexpect.EOF)

    terminal = spawn_in_terminal(
        live_stack, tmp_path, "train", "-i", x, "--target-kernel", "edge", "--epochs", "5000", "--wait"
    )
    terminal.logfile_read = screen = io.StringIO()
    terminal.expect(r"job [0-9a-f-]{36} succeeded")
    terminal.expect(r"learned kernel, 1 x 2")
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0

    # Each frame of the bar: epoch count, the loss, the rate, the time left (ANSI styles aside).
    frames = re.findall(r"(\d+)/5000 loss (\S+) ([\d,]+|-) epochs/s (\S+)", ANSI.sub("", screen.getvalue()))
    epochs = [int(epoch) for epoch, *_ in frames]
    assert epochs and epochs == sorted(epochs) and epochs[-1] == 5000
    assert float(frames[-1][1]) < 1e-6 and frames[-1][3] == "0:00:00"


def test_ctrl_c_while_waiting_leaves_the_job_running_and_exits_130(live_stack, tmp_path, api):
    np.save(tmp_path / "big.npy", long_training_input())
    args = ["train", "-i", "big.npy", "--target-kernel", "box-blur", "--lr", "1e-8", "--epochs", "10000", "--wait"]
    terminal = spawn_in_terminal(live_stack, tmp_path, *args)
    terminal.expect(r"[1-9]\d*/10000")  # training
    terminal.sendintr()
    terminal.expect(r"cancel it with `convq cancel ([0-9a-f-]{36})`")
    job_id = terminal.match.group(1)
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 130
    assert api.job(job_id).status in ("running", "succeeded")  # not cancelled by the interrupt
    api.cancel(job_id)


def test_big_npy_files_travel_as_npy_and_output_writes_the_result_as_npy(convq, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 300)).astype(np.float32)  # 90,000 elements: sent as an .npy part
    np.save(tmp_path / "x.npy", x)
    run = convq("correlate", "-i", "x.npy", "-k", write_matrix(tmp_path, "k.json", K_2X2), "-o", "y.npy")
    assert run.returncode == 0, run.stderr
    assert "wrote y.npy, 299 x 299 float32" in run.stdout
    k = np.array(K_2X2, dtype=np.float32)
    expected = sum(x[i : i + 299, j : j + 299] * k[i, j] for i in range(2) for j in range(2))
    assert np.allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-4)

    edge = write_matrix(tmp_path, "edge.npy", EDGE_IMAGE)
    run = convq("train", "-i", edge, "--target", write_matrix(tmp_path, "t.npy", EDGES), "--kernel-size", "1x2")
    assert run.returncode == 0, run.stderr
    run = convq("train", "-i", edge, "--target", "t.npy", "--kernel-size", "1x2", "-o", "kernel.npy", "--json")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)
    assert np.array_equal(np.load(tmp_path / "kernel.npy"), np.array(job["result"]["kernel"], dtype=np.float32))
