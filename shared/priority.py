"""Big jobs' work yields the CPU to small jobs': the thread doing it runs at a lower priority meanwhile.

A stream of 1024 x 1024 jobs keeps the cores of a small machine busy (the API
reading uploads, the bulk Redis, the worker's run), and a tiny job's few
milliseconds of work then wait for a core at each of its steps. Linux gives each
thread a nice value of its own: the thread that handles a big request (API) or
runs a big job (worker) takes BIG_WORK_NICENESS more for that while, then its own
back, and small jobs' threads win the cores meanwhile (docs/PERFORMANCE.md).

Taking a priority back needs CAP_SYS_NICE or an RLIMIT_NICE of at least 20 (root
usually has the first; `ulimits: nice: 20` in compose gives the second where the
Docker daemon may raise it). A process allowed neither lowers no priority, or its
threads would stay slow for good: `can_take_back` asks the kernel once, on a
thread of its own.
"""

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

log = logging.getLogger(__name__)

LOWEST = 19  # the highest nice value there is


@contextmanager
def lowered(niceness: int) -> Iterator[None]:
    """Run the block on this thread at `niceness` more than its own (0: unchanged), then take its own back."""
    if niceness <= 0 or not can_take_back():
        yield
        return
    thread = threading.get_native_id()
    own = os.getpriority(os.PRIO_PROCESS, thread)
    os.setpriority(os.PRIO_PROCESS, thread, min(own + niceness, LOWEST))
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, thread, own)


@cache
def can_take_back() -> bool:
    """Whether a thread of this process may raise its priority again once it lowered it (Linux only)."""
    if not sys.platform.startswith("linux"):  # elsewhere a process's priority is the only one: not for a thread
        return False
    allowed: list[bool] = []

    def probe() -> None:
        thread = threading.get_native_id()
        own = os.getpriority(os.PRIO_PROCESS, thread)
        try:
            os.setpriority(os.PRIO_PROCESS, thread, own + 1)
            os.setpriority(os.PRIO_PROCESS, thread, own)
        except OSError:  # this thread ends here: a priority it lowered goes with it
            allowed.append(False)
        else:
            allowed.append(True)

    prober = threading.Thread(target=probe, name="priority-probe")
    prober.start()
    prober.join()
    if not allowed[0]:
        log.info(
            "big jobs run at the same priority as small ones: this process may not raise a thread's priority "
            "again (it needs CAP_SYS_NICE or an RLIMIT_NICE of 20; BIG_WORK_NICENESS)"
        )
    return allowed[0]
