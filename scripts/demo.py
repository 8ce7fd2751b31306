"""Walk through the seed's chapter over HTTP against a running convq (`make run` first, then `make demo`).

It uses the Python client (client/), as any program of yours would.

Prints what the source text prints: the 3x3 example, the edge image and its
edges, the transposed image with no edges, and the learned kernel with the
loss every 2 epochs.
"""

import argparse
import os
import sys

from client import Client, ConvqError, Job, ProgressEvent

WAIT_SECONDS = 10  # Prefer: wait on each submission; the seed's jobs take milliseconds


def show(name: str, matrix) -> None:
    """Print a matrix the way torch prints a tensor."""
    integral = all(float(value).is_integer() for row in matrix for value in row)
    rows = ["[" + ", ".join(f"{value:3.0f}." if integral else f"{value:7.4f}" for value in row) + "]" for row in matrix]
    print(f"{name} =\n[" + ",\n ".join(rows) + "]\n")


def succeeded(convq: Client, job: Job) -> Job:
    """The job once finished; exit with its error unless it succeeded."""
    job = convq.wait(job.id)
    if job.status != "succeeded":
        sys.exit(f"job {job.id} {job.status}: {job.error}")
    return job


def correlate(convq: Client, X, K):
    return succeeded(convq, convq.correlate(X, K, wait=WAIT_SECONDS)).result.output


def follow_training(convq: Client, X, Y) -> Job:
    """Submit the seed's training and print the loss every 2 epochs as its events arrive."""
    job = convq.train(X, target=Y, kernel_size=(1, 2), lr=0.03, epochs=20)
    for event in convq.events(job.id):
        if isinstance(event, ProgressEvent) and event.epoch % 2 == 0:
            print(f"epoch {event.epoch}, loss {event.loss:.3f}")
    return succeeded(convq, job)


def main() -> None:
    """The chapter, section by section; a refusal or an unreachable server ends it with the reason."""
    local = f"http://{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
    default_url = os.environ.get("CONVQ_URL", local)  # as the convq command reads it
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=default_url, help=f"where convq answers (default: $CONVQ_URL, else $HOST:$PORT: {default_url})"
    )
    url = parser.parse_args().url
    with Client(url) as convq:
        try:
            convq.health()
        except ConvqError:
            sys.exit(f"convq is not answering at {url}: start it with `make run` first")
        try:
            walk_through(convq)
        except ConvqError as error:
            sys.exit(f"convq refused the demo: {error}")


def walk_through(convq: Client) -> None:
    print("# 1. Two-dimensional cross-correlation\n")
    X, K = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], [[0.0, 1.0], [2.0, 3.0]]
    show("X", X)
    show("K", K)
    show("corr2d(X, K)", correlate(convq, X, K))

    print("# 2. Edge detection: a 6 x 8 image, black (0) in columns 2 to 5, and the kernel [1, -1]\n")
    X = [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0] for _ in range(6)]
    K = [[1.0, -1.0]]
    show("X", X)
    Y = correlate(convq, X, K)
    show("Y = corr2d(X, K)   (1: white to black, -1: black to white)", Y)
    show(
        "corr2d(X.t(), K)   (the vertical edges are gone)", correlate(convq, [list(c) for c in zip(*X, strict=True)], K)
    )

    print("# 3. Learning the kernel from X and Y (lr 0.03, 20 epochs)\n")
    training = follow_training(convq, X, Y)
    print()
    show("learned kernel", training.result.kernel)


if __name__ == "__main__":
    main()
