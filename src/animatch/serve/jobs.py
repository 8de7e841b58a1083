"""The bounded judge queue: one worker thread runs judge jobs in order; a burst waits, a flood is refused.

A LLaVA judge holds one model, so jobs run one at a time on a single worker thread (generation is
already batched inside a job). At most `max_waiting` jobs wait behind the running one; `submit` raises
`QueueFull` beyond that, which the app turns into HTTP 429, so a burst of requests costs a bounded
amount of memory (each waiting job holds one decoded image). Clients poll `snapshot(job_id)` for the
status (queued with its position, running with its progress, done with the result, or error); finished
jobs are kept for polling, the oldest dropped past `keep_finished`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("animatch.serve")


class QueueFull(Exception):
    pass


@dataclass
class Job:
    kind: str
    work: Callable[[Job], Any] | None  # called on the worker thread; updates .done as it goes
    total: int = 1
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "queued"
    done: int = 0
    result: Any = None
    error: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None


class JudgeQueue:
    def __init__(self, max_waiting: int, keep_finished: int = 256):
        self.max_waiting, self.keep_finished = max_waiting, keep_finished
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="animatch-judge", daemon=True)
        self._thread.start()

    def submit(self, kind: str, work: Callable[[Job], Any], total: int = 1) -> Job:
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"the judge queue is full ({self.max_waiting} requests waiting behind the running "
                                f"one); try again in a moment")
            job = Job(kind, work, total)
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify()
            return job

    def load(self) -> dict:
        with self._cond:
            return {"running": int(self._running is not None), "waiting": len(self._waiting),
                    "max_waiting": self.max_waiting}

    def snapshot(self, job_id: str) -> dict | None:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            position = next((n for n, j in enumerate(self._waiting, 1) if j is job), None)
            end = job.finished or time.monotonic()
            return {"job_id": job.id, "kind": job.kind, "status": job.status, "position": position,
                    "progress": {"done": job.done, "total": job.total},
                    "elapsed_s": round(end - (job.started or end), 3), "waited_s": round(
                        (job.started or end) - job.submitted, 3), "result": job.result, "error": job.error}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for job in self._waiting:
                        job.status, job.error = "error", "the server shut down before this job ran"
                    self._waiting.clear()
                    return
                job = self._running = self._waiting.popleft()
                job.status, job.started = "running", time.monotonic()
            try:
                result, status, error = job.work(job), "done", None
            except Exception as e:  # one failed job (e.g. out of memory) must not stop the queue
                log.exception("judge job %s failed", job.id)
                result, status, error = None, "error", f"{type(e).__name__}: {e}".splitlines()[0]
            with self._cond:
                job.result, job.status, job.error, job.finished = result, status, error, time.monotonic()
                job.work = None  # drop the closure and the image it holds; only the result is polled
                self._running = None
                self._forget_old()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished is not None]
        for job in finished[:max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job.id]
