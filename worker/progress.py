"""A training's losses reach the job store in batches: one Redis round trip per interval, not one per epoch.

At a millisecond per epoch, a round trip per epoch would cost more than the
training. The first epoch is written at once (a client sees progress start),
then whatever accumulated every FLUSH_SECONDS; each write also answers whether
the job was cancelled, so a cancelled training stops within one epoch or
FLUSH_SECONDS, whichever is longer. When Redis refuses the write (full, at
maxmemory), the training stops with ProgressNotRecorded: a job whose progress
cannot be recorded fails with its own error rather than running on unseen.
"""

import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.jobstore import FLUSH_SECONDS, Attempt, JobStore


class ProgressNotRecorded(Exception):
    """Redis answered the write of a training's losses with an error (it is full, most likely)."""

    def __init__(self, first_epoch: int, error: RedisError):
        super().__init__(f"could not record the losses from epoch {first_epoch} on: {error}")
        self.first_epoch = first_epoch
        self.error = error


class EpochRecorder:
    """The training loop's on_epoch callback: buffer each loss, write them in batches, say when to stop."""

    def __init__(self, store: JobStore, attempt: Attempt):
        self.store, self.attempt = store, attempt
        self._pending: list[float] = []
        self._first_pending = 1
        self._flushed_at = -FLUSH_SECONDS
        self._stop = False

    def __call__(self, epoch: int, loss: float) -> bool:
        if not self._pending:
            self._first_pending = epoch
        self._pending.append(loss)
        return self.flush() if time.monotonic() - self._flushed_at >= FLUSH_SECONDS else False

    def flush(self) -> bool:
        """Write the losses not yet written; return True if the run should stop."""
        if self._pending:
            try:
                self._stop = not self.store.record_epochs(self.attempt, self._first_pending, self._pending)
            except (RedisConnectionError, RedisTimeoutError):
                raise  # Redis away: the job goes back to the queue (worker.runner)
            except RedisError as error:
                raise ProgressNotRecorded(self._first_pending, error) from error
            self._pending = []
            self._flushed_at = time.monotonic()
        return self._stop
