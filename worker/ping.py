"""Exit 0 if this host's worker answers a ping within 5 s: the worker container's health check.

`python -m worker.ping`. Imports no torch, so it is cheap to run every few seconds.
"""

import socket
import sys

from shared.settings import get_settings
from shared.taskqueue import create_celery


def main() -> int:
    destination = f"celery@{socket.gethostname()}"
    replies = create_celery(get_settings()).control.ping(destination=[destination], timeout=5)
    if not replies:
        print(f"{destination} did not answer a ping within 5 s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
