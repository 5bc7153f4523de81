"""The cloud node's admission queue: bounded, FIFO, handing workers same-cut batches."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import wire
from cloud_node.tail import TailBackend
from edgesplit.bundle import Bundle, Cut


@dataclass(eq=False)  # jobs are distinct whatever their fields: removed by identity
class Job:
    """An admitted request waiting for a worker, its tensors still encoded.

    ``bundle`` and ``backend`` are those of the bundle the request names (a cloud
    serving a rollout serves two); jobs batch together only for the same cut of
    the same bundle.
    """

    identity: bytes
    request_id: int
    cut: Cut
    tensors: tuple[wire.EncodedTensor, ...]
    received: float
    bundle: Bundle
    backend: TailBackend

    @property
    def rows(self) -> int:
        """Rows (batch size) of the request (its tensors' first dimension, checked equal)."""
        return int(self.tensors[0].shape[0])


class AdmissionQueue:
    """A bounded FIFO that hands workers batches of same-cut jobs.

    Also keeps a moving average of the per-request service time, from which
    it estimates the wait of a request admitted now. ``clock`` (seconds) times
    the batch window.
    """

    def __init__(
        self,
        capacity: int,
        workers: int,
        parallelism: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.workers = workers
        self._clock = clock
        # How many batches really compute at once: the workers, unless the backend says
        # otherwise (a Ray tier: its running replicas, whatever the number of dispatchers).
        self._parallelism = parallelism or (lambda: workers)
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0
        self._service_s = 0.0

    def __len__(self) -> int:
        return len(self._jobs)

    def offer(self, job: Job) -> bool:
        """Admit ``job``; ``False`` when the queue is full (or closed)."""
        with self._cond:
            if self._closed or len(self._jobs) >= self.capacity:
                return False
            self._jobs.append(job)
            self._cond.notify()
            return True

    @property
    def service_s(self) -> float:
        """Moving average of the compute time per request, seconds (0 before the first)."""
        return self._service_s

    def expected_wait_s(self) -> float:
        """Expected queueing delay of a request admitted now, seconds."""
        with self._cond:
            ahead = len(self._jobs) + self._running
            service = self._service_s
        return ahead * service / max(1, self._parallelism())

    def take(self, max_rows: int, window_s: float) -> list[Job] | None:
        """The next batch (oldest job first), or ``None`` once closed and drained."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            first = self._jobs.popleft()
            batch, rows = [first], first.rows
            if first.bundle.manifest.model.fixed_batch:
                max_rows = rows  # a model of batch 1 runs each request alone
            deadline = self._clock() + window_s
            while rows < max_rows:
                for job in [j for j in self._jobs if _same_tail(j, first)]:
                    if rows + job.rows <= max_rows:
                        self._jobs.remove(job)
                        batch.append(job)
                        rows += job.rows
                left = deadline - self._clock()
                if left <= 0 or self._closed or rows >= max_rows:
                    break
                self._cond.wait(left)
            self._running += len(batch)
            return batch

    def done(self, jobs: int, seconds: float) -> None:
        """A batch of ``jobs`` was served in ``seconds`` of compute: update the average."""
        with self._cond:
            self._running -= jobs
            per_job = seconds / max(1, jobs)
            self._service_s = (
                per_job if self._service_s == 0 else 0.8 * self._service_s + 0.2 * per_job
            )

    def close(self) -> None:
        """Admit nothing more; workers drain what is queued and then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _same_tail(a: Job, b: Job) -> bool:
    """Whether two jobs run the same tail (same cut of the same bundle)."""
    return a.cut.id == b.cut.id and a.backend is b.backend
