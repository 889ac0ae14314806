"""The long-lived worker (`jobs worker`), and burst mode for the scheduler tick.

The main thread discovers and claims; each claimed job runs on its own
thread (a sync handler that overruns its timeout cannot be killed in Python,
so its slot is freed when the attempt is abandoned and its late result is
refused by fencing). SIGTERM or SIGINT stops claiming, lets running jobs
finish within the grace period, then hands back the leases of any still
running so another worker takes them at once. A second signal skips the grace.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import resource
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from jobs_lib.engine.discovery import Discovery
from jobs_lib.engine.runner import ClaimReport, Engine, Execution
from jobs_lib.engine.schedules import Scheduler
from jobs_lib.model.job import Job
from jobs_lib.observability.logs import event
from jobs_lib.observability.telemetry import QueueStats

log = logging.getLogger("jobs_lib.worker")

#: A worker fires due schedule slots this often (the Cloud Scheduler tick does so every minute).
SCHEDULE_EVERY = 10.0
#: While metrics are exported, a worker counts the due jobs of each type this often (two queries a
#: type).
QUEUE_STATS_EVERY = 15.0
#: At most this many types get queue gauges (each costs a count and a one-document query).
QUEUE_STATS_TYPES = 50
#: A claim batch winning less than this share means another worker takes the same jobs.
CONTENDED_SHARE = 0.75
#: Candidates read longer ago than this are dropped rather than claimed.
MAX_CANDIDATE_AGE = 10.0
#: A page of candidates is sized to last about this long at the recent claim rate ...
PAGE_SECONDS = 3.0
#: While a page is held, the policies' lanes (fair shares) are looked at this often.
REFRESH_EVERY = 1.0
#: ... and holds at most this many (each query costs the same whatever its size,
#: on the emulator ~150-300 ms over 10,000 documents, so big pages are cheap pages).
MAX_PAGE = 500
#: ... and at least this many: the lanes read shard by shard, so a page that holds the whole of a
#: small queue is what puts it in strict due order (jobs_lib.store.jobs.JobStore._lane).
MIN_PAGE = 10


def make_scheduler(engine: Engine) -> Scheduler:
    """A schedule firer on the engine's store (`jobs_lib.app.App.scheduler` is the shared one)."""
    return Scheduler(engine.store.schedules, engine.store, engine.registry, holder=engine.holder)


class Threads:
    """Runs each call on an idle thread if there is one, else on a new one.

    Never queues work behind a busy thread: a sync handler abandoned after its
    timeout keeps its thread, and the next job must not wait for it. Idle
    threads end after a minute.
    """

    IDLE_SECONDS = 60.0

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._idle = 0
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def submit(self, fn: Callable[[], None]) -> None:
        """Run `fn` on a thread of its own now."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._work.put(fn)
                return
        threading.Thread(target=self._loop, args=(fn,), name=self._name, daemon=True).start()

    def _loop(self, fn: Callable[[], None]) -> None:
        while True:
            try:
                fn()
            except Exception:
                log.exception("job thread failed")
            with self._lock:
                self._idle += 1
            try:
                fn = self._work.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    try:  # work handed over while we timed out
                        fn = self._work.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        return


class Background:
    """One daemon thread that runs the calls given to it in order, each answered by a Future.

    Not a ThreadPoolExecutor: Python joins an executor's threads when the interpreter exits, so a
    Firestore call retrying there (up to its 30 s budget while the store does not answer) would
    hold a stopped worker's process that long after SIGTERM and its grace.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``fn(*args)``; its Future gives the result (or the exception)."""
        future: Future[Any] = Future()
        self._calls.put((future, fn, args))
        return future

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Cancel what has not started and let the thread end after the call it is in (if any)."""
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                call[0].cancel()
        self._calls.put(None)


@dataclass
class WorkerSummary:
    """What a worker run did."""

    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    released: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "claimed": self.claimed,
            "outcomes": dict(self.outcomes),
            "released": self.released,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class LoopState:
    """What the worker's loop carries from one turn to the next (`Worker.run`)."""

    # Reading: the page in flight, when to read next, and what the last reads gave.
    fetch: Future[list[Job]] | None = None
    fetch_limit: int = 0
    next_fetch: float = 0.0
    fetches: int = 0
    claimed_since_fetch: int = 0
    #: A claim lost to another worker: a burst reads once more before it stops.
    read_again: bool = False
    # Candidates: read and not yet claimed.
    buffer: dict[str, Job] = field(default_factory=dict)
    buffered_at: float = 0.0
    #: Candidates whose type (or key) was at its limit when tried: claimed again once room may
    #: have freed (one of our jobs ended, or the limit's window or hold-off passed), without
    #: reading them again; a read still runs for everything else.
    waiting: dict[str, Job] = field(default_factory=dict)
    waiting_since: float = 0.0
    claim_after: float = 0.0
    # Pacing: the batch that probes a contended queue, and until when it is contended.
    probe: int = 1
    contended_until: float = 0.0
    # Rounds on the discovery thread: schedules, and the minute counts and queue gauges.
    next_fire: float = 0.0
    firing: Future[None] | None = None
    next_stats: float = 0.0
    stats_run: Future[None] | None = None
    #: The quick look at the policies' lanes (fair shares) while candidates are held: what it
    #: finds goes ahead of them.
    refresh: Future[list[Job]] | None = None
    next_refresh: float = 0.0


class Worker:
    """Runs jobs until stopped (or, in burst mode, until nothing is due or the budget is spent)."""

    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 10,
        poll_interval: float = 0.25,
        grace: float = 30.0,
        burst: bool = False,
        budget: float | None = None,
        hard_limit: float | None = None,
        discovery: Discovery | None = None,
        schedules: bool = True,
        scheduler: Scheduler | None = None,
    ) -> None:
        """With `schedules`, the worker also fires due schedule slots (with `scheduler`, or a firer
        of its own)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.engine = engine
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.grace = grace
        self.burst = burst
        #: Seconds to keep claiming (burst mode) ...
        self.budget = budget
        #: ... and seconds until the process must be done (a function's timeout): a job is
        #: claimed only if its handler's timeout fits, and released if still running then.
        self.hard_limit = hard_limit if hard_limit is not None else budget
        self.discovery = discovery or Discovery(
            engine.store,
            lease_seconds=engine.lease_seconds,
            holder=engine.holder,
            exclude_types=engine.excluded_types,
            lanes=engine.lanes,
            eager=burst,
        )
        self.summary = WorkerSummary()
        self.scheduler = scheduler or (make_scheduler(engine) if schedules else None)
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._wake = threading.Event()  # a slot freed, a fetch finished, or stop
        self._room = threading.Event()  # one of our jobs ended: its type's limit may have room
        self._running: dict[str, Execution] = {}
        self._running_lock = threading.Lock()
        self._threads = Threads("jobs-runner")
        self._claim_batch = max(1, concurrency // 8)
        self._first_probe = max(1, concurrency // 32)
        self._claim_log: deque[tuple[float, int]] = deque()
        self._rng = random.Random()
        #: time.monotonic() of the main loop's last turn (what the liveness probe looks at).
        self.last_loop: float | None = None

    # -- control --------------------------------------------------------------------

    def stop(self, hurry: bool = False) -> None:
        """Ask the worker to stop (safe from a signal handler)."""
        if self._stop.is_set() or hurry:
            self._hurry.set()
        self._stop.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT (a second one skips the grace period)."""

        def handle(signum: int, _frame: FrameType | None) -> None:
            event(
                self.engine.log,
                "worker_stopping",
                f"received {signal.Signals(signum).name}, stopping",
            )
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> WorkerSummary:
        """Discover, claim and run until stopped; returns what was done.

        Reading the next page of candidates overlaps with running the jobs
        already claimed: the query (the slow part) is in flight while slots
        free up, and claims are made only for free slots, so no lease is held
        by a job that is not running. Each turn of the loop: take a page that
        arrived, age the candidates, claim a batch for the free slots, or
        else (a burst may stop here) start the background rounds and the next
        read, and wait for something to happen.
        """
        started = time.monotonic()
        deadline = started + self.budget if self.budget is not None else None
        hard_deadline = started + self.hard_limit if self.hard_limit is not None else None
        store = self.engine.store
        store.calibrate()
        event(
            self.engine.log,
            "worker_started",
            f"worker {self.engine.holder} started (concurrency {self.concurrency})",
            detail=f"clock offset {store.clock.offset:+.3f}s",
        )
        fetcher = Background("jobs-discovery")
        loop = LoopState(probe=self._first_probe)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                self.last_loop = now
                if deadline is not None and now >= deadline:
                    break
                self._reap_abandoned()
                self._take_page(loop, now)
                self._take_refresh(loop)
                self._age_candidates(loop, now)
                self._start_refresh(loop, now, fetcher)
                free = self.concurrency - self.running_count()
                # Claim in batches (one round trip each) unless the worker would sit idle.
                if loop.buffer and (free >= self._claim_batch or free == self.concurrency):
                    self._claim_batch_of(loop, now, free, hard_deadline, fetcher)
                    continue
                if self.burst:
                    finished = self._burst_finished(loop)
                    if finished is None:
                        continue  # read once more before stopping
                    if finished:
                        break
                self._start_rounds(loop, now, fetcher)
                if self._start_read(loop, now, free, fetcher):
                    continue
                self._idle(loop, now)
        finally:
            fetcher.shutdown()
            self._finish(started, hard_deadline)
        return self.summary

    def _take_page(self, loop: LoopState, now: float) -> None:
        """A finished read: its jobs become candidates, and the next read is timed by what it
        found."""
        if loop.fetch is None or not loop.fetch.done():
            return
        try:
            found = loop.fetch.result()
        except Exception:
            log.exception("finding jobs failed; retrying")
            found = []
            loop.next_fetch = now + min(self.poll_interval * 4, 2.0)
        else:
            running = self._running_ids()
            # Leave jobs in partitions other workers lease to them: claiming them would only
            # collide.
            usable = [
                job
                for job in found
                if job.id not in running and not self.discovery.held_elsewhere(job)
            ]
            loop.buffer.update((job.id, job) for job in usable)
            loop.buffered_at = now
            if not usable:
                # Nothing for us (nothing due, or all of it in others' partitions): wait before
                # reading again.
                loop.next_fetch = now + self.poll_interval * (4 if found else 1)
            else:
                loop.next_fetch = (
                    now if len(found) >= loop.fetch_limit else now + self.poll_interval
                )
        loop.fetch = None
        loop.fetches += 1
        loop.claimed_since_fetch = 0
        loop.read_again = False

    def _start_refresh(self, loop: LoopState, now: float, fetcher: Background) -> None:
        """While a page of candidates is held, look at the policies' lanes once a second (fair
        shares: a key that just got jobs), so that its jobs need not wait for the page to drain."""
        if (
            not loop.buffer
            or loop.refresh is not None
            or loop.fetch is not None
            or now < loop.next_refresh
            or not self.discovery.refreshable
        ):
            return
        loop.next_refresh = now + REFRESH_EVERY
        loop.refresh = fetcher.submit(self.discovery.refresh, max(loop.fetch_limit, 1))
        loop.refresh.add_done_callback(lambda _f: self._wake.set())

    def _take_refresh(self, loop: LoopState) -> None:
        """The quick look's jobs go ahead of the candidates held."""
        if loop.refresh is None or not loop.refresh.done():
            return
        try:
            fresh = loop.refresh.result()
        except Exception:
            log.exception("a quick look at the lanes failed")
            fresh = []
        loop.refresh = None
        if fresh:
            running = self._running_ids()
            ahead = {job.id: job for job in fresh if job.id not in running}
            loop.buffer = {**ahead, **{i: j for i, j in loop.buffer.items() if i not in ahead}}

    def _age_candidates(self, loop: LoopState, now: float) -> None:
        """Forget candidates read too long ago; bring back those at their limit once room may have
        freed."""
        if loop.buffer and now - loop.buffered_at > MAX_CANDIDATE_AGE:
            loop.buffer.clear()  # read too long ago: likely taken or changed since
        if loop.waiting and now - loop.waiting_since > MAX_CANDIDATE_AGE:
            loop.waiting.clear()
        if self._room.is_set():
            self._room.clear()
            loop.claim_after = 0.0  # one of our jobs ended: a limit of its type may have room
        if loop.waiting and now >= loop.claim_after:
            for job_id, job in loop.waiting.items():
                loop.buffer.setdefault(job_id, job)
            loop.waiting.clear()

    def _claim_batch_of(
        self,
        loop: LoopState,
        now: float,
        free: int,
        hard_deadline: float | None,
        fetcher: Background,
    ) -> None:
        """Claim a batch of candidates for the free slots and start them; pace the next batch by how
        many claims won (claims lost mean other workers read the same page)."""
        # On the whole queue other workers may read the same page: probe with a small batch and
        # grow it while claims keep winning (a partition of our own needs no probe).
        own_partition = self.discovery.partition is not None
        take = free if own_partition else min(free, loop.probe)
        batch = list(loop.buffer.values())
        if now < loop.contended_until and not own_partition:
            # Workers reading the same page: each claims a random part of its front (the order of
            # the page, e.g. fair shares' rounds, still holds roughly).
            front = batch[: 4 * take]
            batch = self._rng.sample(front, min(take, len(front)))
        batch = batch[:take]
        for job in batch:
            del loop.buffer[job.id]
        max_timeout = hard_deadline - now if hard_deadline is not None else None
        try:
            report = self.engine.claim_report(batch, limit=free, max_timeout=max_timeout)
        except Exception:
            log.exception("claiming jobs failed; retrying")
            report = ClaimReport()
        executions = report.executions
        log.debug(
            "claim batch",
            extra={
                "event": "claim_batch",
                "count": report.won,
                "detail": f"tried={report.tried} partition={self.discovery.partition} "
                f"buffer={len(loop.buffer)}",
            },
        )
        held = report.held  # not tried now: still candidates
        if held:
            if not loop.waiting:
                loop.waiting_since = now
            loop.waiting.update((job.id, job) for job in held)
            room = self.engine.next_room()
            loop.claim_after = (
                room
                if room is not None and not executions
                else now + (0.0 if executions else self.poll_interval)
            )
        if (
            report.tried
            and report.won < report.tried * CONTENDED_SHARE
            and self.discovery.partition is None
        ):
            # Another worker reads the same jobs: the rest of this page is likely taken too.
            fetcher.submit(self.discovery.contended)  # runs before the next fetch
            loop.buffer.clear()
            loop.probe = self._claim_batch
            loop.contended_until = now + 30.0
            loop.read_again = True  # what the others left of the page is found by a fresh read
        elif report.won == report.tried:
            # While other workers read the whole queue too, keep batches small: a big one that
            # loses costs a refused write per job.
            loop.probe = min(
                loop.probe * 2,
                self._claim_batch if now < loop.contended_until else self.concurrency,
            )
        for execution in executions:
            self._start(execution)
        self._claim_log.append((now, len(executions)))
        loop.claimed_since_fetch += len(executions)

    def _burst_finished(self, loop: LoopState) -> bool | None:
        """In burst mode: True once the last read found nothing more to run, None to read once more
        first, False while there is still work."""
        if (
            loop.fetch is not None
            or loop.buffer
            or not loop.fetches
            or loop.claimed_since_fetch
            or loop.read_again
            or self.running_count()
        ):
            return False
        if not self.discovery.last_read_whole:
            # The last read was of one partition (claims had lost to another runner): read the whole
            # of our share once more, so nothing due is left behind in the partitions nobody read
            # (another tick may have stopped already).
            self.discovery.read_whole_next()
            loop.read_again = True
            return None
        return True

    def _start_rounds(self, loop: LoopState, now: float, fetcher: Background) -> None:
        """Start the schedules' and the statistics' rounds when due, on the discovery thread."""
        if (
            self.scheduler is not None
            and (loop.firing is None or loop.firing.done())
            and now >= loop.next_fire
        ):
            # Fire due schedule slots on the discovery thread (after any read in flight); the jobs
            # they create are then found like any other.
            loop.next_fire = now + SCHEDULE_EVERY
            loop.firing = fetcher.submit(self._fire_schedules)
        if (
            not self.burst
            and (loop.stats_run is None or loop.stats_run.done())
            and now >= loop.next_stats
        ):
            loop.next_stats = now + QUEUE_STATS_EVERY
            loop.stats_run = fetcher.submit(self._periodic)

    def _start_read(self, loop: LoopState, now: float, free: int, fetcher: Background) -> bool:
        """Read the next page once this one is used up; it arrives while the jobs just claimed
        run."""
        if loop.fetch is not None or loop.buffer or free <= 0 or now < loop.next_fetch:
            return False
        loop.fetch_limit = self._page_size(now)
        loop.fetch = fetcher.submit(self.discovery.candidates, loop.fetch_limit)
        loop.fetch.add_done_callback(lambda _f: self._wake.set())
        return True

    def _idle(self, loop: LoopState, now: float) -> None:
        """Wait until a slot frees, a read arrives, the next read is due, or room may have freed."""
        timeout = (
            max(min(loop.next_fetch - now, self.poll_interval), 0.001)
            if loop.fetch is None
            else self.poll_interval
        )
        if loop.waiting:
            timeout = max(min(timeout, loop.claim_after - now), 0.001)
        self._wake.wait(timeout)
        self._wake.clear()

    def _finish(self, started: float, hard_deadline: float | None) -> None:
        """Hand back the partition, let running jobs end (or release them), log what was done."""
        with contextlib.suppress(Exception):
            self.discovery.close()
        self._shutdown(hard_deadline)
        self.summary.seconds = time.monotonic() - started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = {
            **self.summary.as_dict(),
            "firestore": self.engine.store.stats.snapshot(),
            "maxRssMb": round(usage.ru_maxrss / 1024, 1),
            "cpuSeconds": round(usage.ru_utime + usage.ru_stime, 2),
        }
        event(
            self.engine.log, "worker_stopped", f"worker {self.engine.holder} stopped", stats=stats
        )

    def _periodic(self) -> None:
        """Every `QUEUE_STATS_EVERY`: write the minute counts, and the queue gauges if metrics are
        exported."""
        if self.engine.throughput.due():
            self.engine.throughput.flush()
        if self.engine.telemetry.recording_metrics:
            self.record_queue_stats()

    def record_queue_stats(self) -> None:
        """Count the due jobs of each registered type and find the oldest (the queue gauges)."""
        store = self.engine.store
        try:
            now = store.now()
            stats = {}
            for job_type in self.engine.registry.types()[:QUEUE_STATS_TYPES]:
                oldest = store.oldest_due(job_type, now)
                due = store.due_count(job_type, now) if oldest is not None else 0
                waited = (
                    (now - oldest.scheduled_for).total_seconds()
                    if oldest is not None and oldest.scheduled_for
                    else 0.0
                )
                stats[job_type] = QueueStats(due, max(waited, 0.0))
            self.engine.telemetry.set_queue_stats(stats)
        except Exception:
            log.warning(
                "counting due jobs for the queue gauges failed; trying again later", exc_info=True
            )

    def _fire_schedules(self) -> None:
        """Every `SCHEDULE_EVERY`: fire due schedule slots, and repair flows a process left."""
        assert self.scheduler is not None
        try:
            self.scheduler.fire_due()
        except Exception:
            log.exception("firing schedules failed; retrying at the next round")
        try:
            self.engine.flows.repair()
        except Exception:
            log.exception("repairing flows failed; retrying at the next round")

    def _page_size(self, now: float) -> int:
        """Enough candidates for ``PAGE_SECONDS`` at the recent claim rate, at least two rounds of
        slots."""
        while self._claim_log and self._claim_log[0][0] < now - 5.0:
            self._claim_log.popleft()
        rate = sum(n for _t, n in self._claim_log) / 5.0
        return max(2 * self.concurrency, MIN_PAGE, min(int(rate * PAGE_SECONDS), MAX_PAGE))

    def _running_ids(self) -> set[str]:
        with self._running_lock:
            return set(self._running)

    def running_count(self) -> int:
        """Jobs this worker is running."""
        with self._running_lock:
            return len(self._running)

    def _start(self, execution: Execution) -> None:
        self.summary.claimed += 1
        with self._running_lock:
            self._running[execution.claim.job_id] = execution
        self._threads.submit(lambda: self._run_one(execution))

    def _run_one(self, execution: Execution) -> None:
        try:
            execution.run()
        finally:
            self._settled(execution)

    def _settled(self, execution: Execution) -> None:
        with self._running_lock:
            if self._running.pop(execution.claim.job_id, None) is None:
                return
        self.summary.outcomes[execution.final_status or "unrecorded"] += 1
        self._room.set()
        self._wake.set()

    def _reap_abandoned(self) -> None:
        """Free the slots of attempts the keeper abandoned (timed out, lease lost)."""
        for execution in self._snapshot():
            if execution.finished and execution.lease_lost and not execution.done.is_set():
                with self._running_lock:
                    self._running.pop(execution.claim.job_id, None)
                self.summary.outcomes["abandoned"] += 1
                self._wake.set()

    def _snapshot(self) -> list[Execution]:
        with self._running_lock:
            return list(self._running.values())

    def _shutdown(self, deadline: float | None) -> None:
        if self.burst and deadline is not None:
            wait_until = deadline  # burst mode: running jobs may run until the hard limit
        else:
            wait_until = time.monotonic() + (0 if self._hurry.is_set() else self.grace)
            for execution in self._snapshot():
                # A continuable job stops at its next checkpoint, its cursor saved, and another
                # runner goes on from there (jobs_lib.engine.durable).
                execution.request_continuation()
        while self._snapshot() and time.monotonic() < wait_until and not self._hurry.is_set():
            self._reap_abandoned()
            self._wake.wait(0.1)
            self._wake.clear()
        for execution in self._snapshot():
            if not execution.finished:
                execution.release()
                self.summary.released += 1
        self.engine.close()
