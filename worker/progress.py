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
    """The training loop's on_epoch callback: keep each loss, write them in batches, say when to stop.

    Every loss of the attempt is kept (a float an epoch), so that losses the job store no longer has (a failover
    promoted a replica that missed the last batches) are sent again with the next batch: each epoch is stored once.
    """

    def __init__(self, store: JobStore, attempt: Attempt):
        self.store, self.attempt = store, attempt
        self._losses: list[float] = []
        self._sent = 0  # losses written at the last flush...
        self._stored = 0  # ...and how many epochs the job store said it holds then
        self._flushed_at = -FLUSH_SECONDS
        self._stop = False

    def __call__(self, epoch: int, loss: float) -> bool:
        self._losses.append(loss)  # epochs come in order from 1: this is epoch len(self._losses)
        return self.flush() if time.monotonic() - self._flushed_at >= FLUSH_SECONDS else False

    def flush(self) -> bool:
        """Write the losses not yet written (and any the job store lost); return True if the run should stop."""
        if len(self._losses) > self._sent:
            first = min(self._sent, self._stored) + 1
            try:
                recorded = self.store.record_epochs(self.attempt, first, self._losses[first - 1 :])
            except (RedisConnectionError, RedisTimeoutError):
                raise  # Redis away: the job goes back to the queue (worker.runner)
            except RedisError as error:
                raise ProgressNotRecorded(first, error) from error
            self._stop, self._stored = not recorded.go_on, recorded.stored
            self._sent = len(self._losses)
            self._flushed_at = time.monotonic()
        return self._stop
