"""Walk through the seed's chapter over HTTP against a running convq (`make run` first, then `make demo`).

Prints what the source text prints: the 3x3 example, the edge image and its
edges, the transposed image with no edges, and the learned kernel with the
loss every 2 epochs.
"""

import argparse
import os
import sys
import time

import requests

POLL_SECONDS = 0.05


def show(name: str, matrix: list[list[float]]) -> None:
    """Print a matrix the way torch prints a tensor."""
    integral = all(float(value).is_integer() for row in matrix for value in row)
    rows = ["[" + ", ".join(f"{value:3.0f}." if integral else f"{value:7.4f}" for value in row) + "]" for row in matrix]
    print(f"{name} =\n[" + ",\n ".join(rows) + "]\n")


class Convq:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.http = requests.Session()

    def submit(self, path: str, body: dict) -> str:
        response = self.http.post(f"{self.url}{path}", json=body, timeout=10)
        if response.status_code != 202:
            sys.exit(f"{path} answered {response.status_code}: {response.text}")
        return response.json()["id"]

    def wait(self, job_id: str) -> dict:
        while (job := self.http.get(f"{self.url}/v1/jobs/{job_id}", timeout=10).json())["status"] in (
            "queued",
            "running",
        ):
            time.sleep(POLL_SECONDS)
        if job["status"] != "succeeded":
            sys.exit(f"job {job_id} {job['status']}: {job['error']}")
        return job["result"]

    def correlate(self, X, K) -> list[list[float]]:
        return self.wait(self.submit("/v1/correlations", {"input": X, "kernel": K}))["output"]

    def follow_training(self, body: dict) -> dict:
        """Submit a training and print the loss every 2 epochs as the loss history grows."""
        job_id = self.submit("/v1/kernel-trainings", body)
        done = 0
        while True:
            page = self.http.get(f"{self.url}/v1/jobs/{job_id}/loss", params={"since": done}, timeout=10).json()
            for epoch, loss in enumerate(page["losses"], start=done + 1):
                if epoch % 2 == 0:
                    print(f"epoch {epoch}, loss {loss:.3f}")
            done = page["epochs_done"]
            if page["status"] not in ("queued", "running"):
                return self.wait(job_id)
            time.sleep(POLL_SECONDS)


def main() -> None:
    default_url = f"http://{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=default_url, help=f"where convq answers (default {default_url})")
    convq = Convq(parser.parse_args().url)
    try:
        convq.http.get(f"{convq.url}/healthz", timeout=5).raise_for_status()
    except requests.RequestException:
        sys.exit(f"convq is not answering at {convq.url}: start it with `make run` first")

    print("# 1. Two-dimensional cross-correlation\n")
    X, K = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], [[0.0, 1.0], [2.0, 3.0]]
    show("X", X)
    show("K", K)
    show("corr2d(X, K)", convq.correlate(X, K))

    print("# 2. Edge detection: a 6 x 8 image, black (0) in columns 2 to 5, and the kernel [1, -1]\n")
    X = [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0] for _ in range(6)]
    K = [[1.0, -1.0]]
    show("X", X)
    Y = convq.correlate(X, K)
    show("Y = corr2d(X, K)   (1: white to black, -1: black to white)", Y)
    show(
        "corr2d(X.t(), K)   (the vertical edges are gone)", convq.correlate([list(c) for c in zip(*X, strict=True)], K)
    )

    print("# 3. Learning the kernel from X and Y (lr 0.03, 20 epochs)\n")
    result = convq.follow_training({"input": X, "target": Y, "kernel_size": [1, 2], "lr": 0.03, "epochs": 20})
    print()
    show("learned kernel", result["kernel"])


if __name__ == "__main__":
    main()
