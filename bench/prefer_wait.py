"""Latency of a tiny correlation through a running convq: one `Prefer: wait` submit vs submit plus polling.

Usage: python -m bench.prefer_wait [--url http://127.0.0.1:8000] [--jobs 200]
Prints the median and p90 of each way, measured side by side (interleaved) in one run.
"""

import argparse
import statistics
import time

import requests

TINY = {"input": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], "kernel": [[0.0, 1.0], [2.0, 3.0]]}


def waiting_submit(http: requests.Session, url: str) -> float:
    started = time.perf_counter()
    response = http.post(f"{url}/v1/correlations", json=TINY, headers={"Prefer": "wait=10"}, timeout=30)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def submit_then_poll(http: requests.Session, url: str, interval: float) -> float:
    started = time.perf_counter()
    location = url + http.post(f"{url}/v1/correlations", json=TINY, timeout=30).headers["Location"]
    while http.get(location, timeout=30).json()["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(interval)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    http = requests.Session()
    ways = {
        "Prefer: wait=10 (one request)": lambda: waiting_submit(http, args.url),
        "submit + poll every 10 ms": lambda: submit_then_poll(http, args.url, 0.01),
        "submit + poll every 100 ms": lambda: submit_then_poll(http, args.url, 0.1),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.jobs):
        for name, way in ways.items():
            times[name].append(way())
    for name, measured in times.items():
        deciles = statistics.quantiles(measured, n=10)
        print(f"{name:32s} median {statistics.median(measured) * 1000:7.1f} ms   p90 {deciles[8] * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
