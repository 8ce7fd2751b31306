"""Fill a running stack's Redis to its maxmemory and count what clients get and what becomes of every job.

Against a stack whose Redis you may reconfigure (never a production one):

    REDIS_URL=redis://127.0.0.1:6390/0 PORT=8250 bin/run &     # over a redis-server of your own
    python scripts/full_redis.py --url http://127.0.0.1:8250 --redis-url redis://127.0.0.1:6390/0 --margin 1000000

Two trainings start, `maxmemory` is set `--margin` bytes above what Redis uses, 150 correlations are
submitted from 8 clients while /healthz is polled every 0.1 s; 3 s later `maxmemory` goes back to 0 (none)
and every accepted job is followed to its end and its output checked. The numbers in docs/RELIABILITY.md
("Limits: a full Redis") came from this script.
"""

import argparse
import collections
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis
import requests

FINISHED = ("succeeded", "failed", "cancelled")
TRAINING = {
    "input": [[0.5 * ((i * j) % 7) for j in range(64)] for i in range(64)],
    "target_kernel": [[1, -1, 0.5]] * 3,
    "lr": 1e-5,
    "epochs": 3000,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8250")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--margin", type=int, default=1_000_000, help="bytes of room left above used memory")
    parser.add_argument("--submissions", type=int, default=150)
    args = parser.parse_args()
    url, store = args.url, redis.Redis.from_url(args.redis_url)

    trainings = [requests.post(f"{url}/v1/kernel-trainings", json=TRAINING, timeout=10).json()["id"] for _ in range(2)]
    time.sleep(0.3)
    used = store.info("memory")["used_memory"]
    store.config_set("maxmemory", used + args.margin)
    print(f"used {used} bytes; maxmemory {used + args.margin}")

    health, stop = [], threading.Event()

    def probe() -> None:
        while not stop.wait(0.1):
            started = time.monotonic()
            status = requests.get(f"{url}/healthz", timeout=10).status_code
            health.append((status, time.monotonic() - started))

    threading.Thread(target=probe, daemon=True).start()
    run = time.time_ns()
    statuses = collections.Counter()

    def submit(number: int) -> tuple[int, str] | None:
        body = {"input": [[float(number), 1.0] * 50] * 50, "kernel": [[2.0]]}
        headers = {"Idempotency-Key": f"full-redis-{run}-{number}"}
        response = requests.post(f"{url}/v1/correlations", json=body, headers=headers, timeout=20)
        statuses[response.status_code] += 1
        return (number, response.json()["id"]) if response.status_code in (200, 202) else None

    with ThreadPoolExecutor(8) as pool:
        accepted = [found for found in pool.map(submit, range(args.submissions)) if found]
    print("submissions:", dict(statuses))
    ready = requests.get(f"{url}/readyz", timeout=10)
    print("readyz:", ready.status_code, ready.json().get("detail", ""))
    time.sleep(3)
    store.config_set("maxmemory", 0)
    room = time.monotonic()

    def end(job_id: str) -> dict:
        while (job := requests.get(f"{url}/v1/jobs/{job_id}", timeout=10).json())["status"] not in FINISHED:
            if time.monotonic() - room > 120:
                return job
            time.sleep(0.2)
        return job

    ends, wrong = collections.Counter(), 0
    for number, job_id in accepted:
        job = end(job_id)
        ends[job["status"]] += 1
        wrong += job["status"] == "succeeded" and job["result"]["output"][0][:2] != [2.0 * number, 2.0]
    for job_id in trainings:
        job = end(job_id)
        print("training:", job["status"], "attempt", job["attempts"], (job["error"] or {}).get("type", ""))
    stop.set()
    print(
        f"healthz: {dict(collections.Counter(s for s, _ in health))}, slowest {max(d for _, d in health) * 1000:.0f} ms"
    )
    print(
        f"accepted jobs ended: {dict(ends)}, wrong outputs: {wrong}, "
        f"the last {time.monotonic() - room:.1f} s after room"
    )


if __name__ == "__main__":
    main()
