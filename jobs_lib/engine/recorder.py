"""The recorder: the one writer of claimed jobs in a process.

Completions, progress, lease renewals and failures from every running job go
through one queue. A single flusher thread sends what has gathered as one
BatchWrite (per-write preconditions, per-write results), so a busy worker
pays one round trip for many jobs and an idle one pays no waiting. Writes to
the same job are merged and never in flight twice, so each is conditioned on
the version our previous write produced.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from jobs_lib.model.outcomes import Update
from jobs_lib.store import Claim, FencedWrite, JobStore, WriteOutcome, WriteStatus

log = logging.getLogger("jobs_lib.recorder")

#: BatchWrite takes at most 500 writes.
MAX_BATCH = 450
#: While busy, wait this long for more writes to share a round trip (a write
#: alone costs ~2 ms of emulator time, one of 64 ~0.2 ms).
LINGER = 0.005
#: "Busy" means the previous flush ended this recently.
BUSY_WINDOW = 0.05
#: A batch this large goes at once.
FULL_ENOUGH = 64


@dataclass
class _Pending:
    claim: Claim
    update: Update
    futures: list[Future[WriteOutcome]] = field(default_factory=list)


class Recorder:
    """Coalesces fenced writes into BatchWrite calls on a background thread."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._lock = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._urgent = False

    def submit(self, claim: Claim, update: Update, *, urgent: bool = False) -> Future[WriteOutcome]:
        """Queue an update to a claimed job; the future gives the write's outcome. An `urgent` one
        (a handler waits for it: a durable step) goes with the next flush without lingering."""
        future: Future[WriteOutcome] = Future()
        with self._lock:
            self._urgent = self._urgent or urgent
            if self._closed:
                future.set_result(WriteOutcome(WriteStatus.ERROR, detail="recorder stopped"))
                return future
            pending = self._pending.get(claim.job_id)
            if pending is None:
                self._pending[claim.job_id] = _Pending(claim, update, [future])
            else:
                pending.update = pending.update.merged(update)
                pending.futures.append(future)
            self._ensure_thread()
            self._lock.notify()
        return future

    def write(
        self, claim: Claim, update: Update, timeout: float | None = None, *, urgent: bool = False
    ) -> WriteOutcome:
        """Queue an update and wait for the outcome."""
        return self.submit(claim, update, urgent=urgent).result(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="jobs-recorder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        last_flush = 0.0
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if not self._pending and self._closed:
                    return
                if (
                    time.monotonic() - last_flush < BUSY_WINDOW
                    and not self._closed
                    and not self._urgent
                ):
                    linger_until = time.monotonic() + LINGER
                    while (
                        len(self._pending) < FULL_ENOUGH
                        and not self._urgent
                        and (left := linger_until - time.monotonic()) > 0
                    ):
                        self._lock.wait(left)
                self._urgent = False
                take = list(self._pending)[:MAX_BATCH]
                batch = [self._pending.pop(job_id) for job_id in take]
            self._flush(batch)
            last_flush = time.monotonic()

    def _flush(self, batch: list[_Pending]) -> None:
        writes = [FencedWrite(p.claim, p.update) for p in batch]
        try:
            self.store.commit(writes)
        except Exception as exc:  # a bug or an unexpected error must not strand waiting jobs
            log.exception("recorder flush failed")
            for w in writes:
                w.outcome = WriteOutcome(WriteStatus.ERROR, detail=repr(exc))
        for pending, write in zip(batch, writes, strict=True):
            outcome = write.outcome or WriteOutcome(WriteStatus.ERROR, detail="no outcome")
            for future in pending.futures:
                future.set_result(outcome)

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued and stop the thread."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)


__all__ = ["Recorder"]
