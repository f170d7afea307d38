"""Draining the job table into Cloudflare: one bookkeeper, many uploading workers.

The thread that calls ``Runner.run`` is the bookkeeper, and the only one that
touches the job table: it claims rows in batches, renews their leases while uploads
are slow, and records outcomes in batches. Worker threads only speak HTTP: each
takes a claim from a queue, makes the attempt (``migrator.attempt``), and hands
back an outcome.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

from migrator.attempt import AttemptResult, Attempts
from migrator.client import ImagesClient
from migrator.errors import (
    AccountStoppedError,
    CircuitOpenError,
    ExitCode,
    MigratorError,
)
from migrator.store import JobStore, Outcome, Released, State

logger = logging.getLogger(__name__)

POLL_S = 0.01
"""How often the bookkeeper looks for results while requests are in flight."""


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far a run has come, as handed to the progress callback."""

    done: int
    failed: int
    retried: int
    total: int | None
    """Rows waiting when the run started (``None`` if unknown)."""
    elapsed: float
    throttled: int

    @property
    def rate(self) -> float:
        """Rows done per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run behaves; every field has the default ``migrator run`` uses."""

    workers: int = 64
    max_attempts: int = 8
    max_duration: float | None = None
    """Seconds after which the run stops claiming and ends (exit 4 if work remains)."""
    max_items: int | None = None
    """Rows to attempt at most in this run (exit 4 if work remains)."""
    fetch_local: bool = False
    """Download URL sources here and upload the bytes, instead of by URL."""
    lease: float = 120.0
    """Seconds a claim stays ours without renewal; a dead run's rows wait this long."""
    claim_batch: int = 200
    flush_interval: float = 0.25
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    settle_delay: float = 30.0
    """Seconds an upload without a custom ID that may have reached Cloudflare
    waits before it is looked up: Cloudflare may still be storing it."""
    stop_timeout: float = 30.0
    """Seconds a stopping run waits for requests in flight."""
    breaker_window: int = 200
    breaker_threshold: float = 0.9
    """Fraction of the last ``breaker_window`` attempts that failed to stop the run."""
    idle_poll: float = 0.5
    progress: Callable[[Progress], None] | None = None
    progress_interval: float = 1.0
    handle_signals: bool = True
    """Take over SIGINT and SIGTERM while running (main thread only)."""
    log_outcomes: bool = True
    """Log every image done at INFO (else at DEBUG); failures and retries always."""


@dataclasses.dataclass
class RunSummary:
    """What a run did and why it ended."""

    counts: dict[str, int]
    """Outcomes by kind: done, updated, failed, retried, released."""
    elapsed: float
    requests: int
    throttled: int
    error_codes: dict[str, int]
    exit_reason: str
    """Why it ended: finished, interrupted, max-duration, max-items, auth, quota,
    circuit-breaker."""
    remaining: int
    """Rows still pending or claimed when the run ended."""
    error: MigratorError | None = None
    """The fatal error that stopped the run, if one did."""

    @property
    def throughput(self) -> float:
        """Rows done (uploaded or updated) per second."""
        finished = self.counts.get("done", 0) + self.counts.get("updated", 0)
        return finished / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def exit_code(self) -> ExitCode:
        """The exit code ``migrator run`` ends with."""
        if self.exit_reason == "interrupted":
            return ExitCode.INTERRUPTED
        if self.error is not None:
            return ExitCode.FATAL
        if self.exit_reason in ("max-duration", "max-items") and self.remaining:
            return ExitCode.MORE_WORK
        if self.counts.get("failed", 0):
            return ExitCode.FAILURES
        return ExitCode.OK

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        counts = self.counts
        text = (
            f"run {self.exit_reason}: {counts.get('done', 0)} uploaded, "
            f"{counts.get('updated', 0)} updated, {counts.get('failed', 0)} failed, "
            f"{counts.get('retried', 0)} to retry, {self.remaining} remaining; "
            f"{self.elapsed:.1f} s, {self.throughput:.1f} images/s, "
            f"{self.throttled} throttled (429)"
        )
        if self.remaining and self.exit_reason in ("max-duration", "max-items"):
            text += "; more work remains"
        return text

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready values."""
        return {
            "exit_reason": self.exit_reason,
            "exit_code": int(self.exit_code),
            "counts": dict(self.counts),
            "remaining": self.remaining,
            "elapsed_s": round(self.elapsed, 3),
            "throughput_per_s": round(self.throughput, 3),
            "requests": self.requests,
            "throttled": self.throttled,
            "error_codes": dict(self.error_codes),
            "error": str(self.error) if self.error else None,
        }


_STOP = object()


class Runner:
    """Upload every pending row of ``store`` through ``client``; see ``run``."""

    def __init__(
        self, store: JobStore, client: ImagesClient, settings: RunSettings
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.owner = f"run-{uuid.uuid4().hex[:12]}"
        self._work: queue.Queue[Any] = queue.Queue()
        # Workers append and the bookkeeper pops: both are atomic on a deque, and
        # unlike a Queue no worker wakes the bookkeeper once per result.
        self._results: collections.deque[AttemptResult] = collections.deque()
        self._stop_reason: str | None = None
        self._fatal: MigratorError | None = None
        self._interrupts = 0
        self._outstanding = 0
        self._claimed = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._codes: collections.Counter[str] = collections.Counter()
        self._recent: collections.deque[bool] = collections.deque(
            maxlen=settings.breaker_window
        )
        self._unrecorded: list[Outcome] = []
        self._started = time.monotonic()
        self._attempts = Attempts(client, settings)

    # The bookkeeper.

    def run(self) -> RunSummary:
        """Drain the table until done, a cap, a fatal error or an interruption.

        A first SIGINT or SIGTERM stops claiming, lets requests in flight finish
        (for up to ``stop_timeout``), writes every outcome back and releases the
        claims no worker started; a second one raises ``KeyboardInterrupt`` at
        once, leaving the rest to lease expiry and the next run.
        """
        self._started = time.monotonic()
        run_id = self.store.start_run(self.owner)
        total = self._waiting_rows()
        logger.info(
            "run %s: %d rows waiting, %d workers",
            self.owner,
            total,
            self.settings.workers,
        )
        workers = [
            threading.Thread(target=self._work_loop, name=f"worker-{n}", daemon=True)
            for n in range(self.settings.workers)
        ]
        for worker in workers:
            worker.start()

        restore = self._install_signal_handlers()
        try:
            self._drain(total)
            self._wind_down(workers)
        finally:
            restore()
        summary = self._summary()
        self.store.finish_run(
            run_id,
            summary.exit_reason,
            summary.counts,
            summary.requests,
            summary.throttled,
        )
        return summary

    def stop(self, reason: str = "interrupted") -> None:
        """Ask the run to stop claiming and end as soon as it can (thread-safe)."""
        if self._stop_reason is None:
            self._stop_reason = reason

    def _drain(self, total: int) -> None:
        settings = self.settings
        next_flush = next_renew = next_progress = time.monotonic()
        while self._stop_reason is None:
            self._collect(wait=POLL_S if self._outstanding else 0.0)
            now = time.monotonic()
            if now >= next_flush:
                self._flush()
                next_flush = now + settings.flush_interval
            if now >= next_renew:
                self.store.renew(self.owner, settings.lease)
                next_renew = now + settings.lease / 4
            if settings.progress and now >= next_progress:
                settings.progress(self._progress(total))
                next_progress = now + settings.progress_interval
            if self._check_caps(now):
                break

            claimed = self._refill()
            if claimed or self._outstanding:
                continue
            # Nothing to hand out and nothing in flight: either the table is
            # drained, or what is left waits for its backoff or a lease to expire.
            self._flush()
            if self._waiting_rows(claimable_only=False) == 0:
                self.stop("finished")
                break
            time.sleep(settings.idle_poll)
        if settings.progress:
            settings.progress(self._progress(total))

    def _check_caps(self, now: float) -> bool:
        settings = self.settings
        if settings.max_duration is not None and (
            now - self._started >= settings.max_duration
        ):
            self.stop("max-duration")
            return True
        if (
            settings.max_items is not None
            and self._claimed >= settings.max_items
            and not self._outstanding
        ):
            self.stop("max-items")
            return True
        return False

    def _refill(self) -> int:
        """Claim more rows when the queue runs low; return how many were claimed."""
        settings = self.settings
        queued = self._work.qsize()
        if queued >= settings.workers:
            return 0
        limit = min(
            settings.claim_batch, settings.workers + settings.claim_batch - queued
        )
        if settings.max_items is not None:
            limit = min(limit, settings.max_items - self._claimed)
        if limit <= 0:
            return 0
        claims = self.store.claim(self.owner, limit, settings.lease)
        for claim in claims:
            self._work.put(claim)
        self._outstanding += len(claims)
        self._claimed += len(claims)
        return len(claims)

    def _collect(self, wait: float) -> None:
        """Take the workers' results: tally them, feed the breaker, keep outcomes.

        With none waiting, sleep ``wait`` seconds first.
        """
        if wait and not self._results:
            time.sleep(wait)
        while self._results:
            self._take(self._results.popleft())

    def _take(self, result: AttemptResult) -> None:
        self._outstanding -= 1
        self._unrecorded.append(result.outcome)
        self._counts[result.kind] += 1
        if result.error_code:
            self._codes[result.error_code] += 1
        if result.fatal is not None and self._fatal is None:
            logger.error("run %s: stopping: %s", self.owner, result.fatal)
            self._fatal = result.fatal
            quota = isinstance(result.fatal, AccountStoppedError)
            self.stop("quota" if quota else "auth")
        if result.healthy is not None:
            self._recent.append(result.healthy)
            self._check_breaker()

    def _check_breaker(self) -> None:
        settings = self.settings
        if len(self._recent) < settings.breaker_window or self._fatal is not None:
            return
        failures = self._recent.count(False)
        if failures >= settings.breaker_threshold * len(self._recent):
            self._fatal = CircuitOpenError(
                f"run stopped: {failures} of the last {len(self._recent)} attempts "
                f"failed (most common: {self._top_codes()}); check the origin and "
                "credentials, then run again"
            )
            self.stop("circuit-breaker")

    def _top_codes(self) -> str:
        return ", ".join(f"{code} x{n}" for code, n in self._codes.most_common(3))

    def _flush(self) -> None:
        if self._unrecorded:
            outcomes, self._unrecorded = self._unrecorded, []
            self.store.record(outcomes)

    def _wind_down(self, workers: list[threading.Thread]) -> None:
        """Release unstarted claims, wait for requests in flight, record all."""
        while True:
            try:
                claim = self._work.get_nowait()
            except queue.Empty:
                break
            self._outstanding -= 1
            self._counts["released"] += 1
            self._unrecorded.append(Released(claim.row_id, claim.attempt, claim.owner))
        for _ in workers:
            self._work.put(_STOP)

        deadline = time.monotonic() + self.settings.stop_timeout
        while self._outstanding > 0 and time.monotonic() < deadline:
            self._collect(wait=POLL_S)
        self._collect(wait=0.0)
        self._flush()
        if self._outstanding > 0:
            logger.warning(
                "run %s: %d requests still in flight after %.0f s; their rows are "
                "released in doubt and settled by the next run",
                self.owner,
                self._outstanding,
                self.settings.stop_timeout,
            )
        self.store.release(self.owner)

    def _waiting_rows(self, claimable_only: bool = True) -> int:
        pending = self.store.count_in(State.PENDING)
        if claimable_only:
            return pending
        return pending + self.store.count_in(State.CLAIMED)

    def _progress(self, total: int) -> Progress:
        return Progress(
            done=self._counts["done"] + self._counts["updated"],
            failed=self._counts["failed"],
            retried=self._counts["retried"],
            total=total,
            elapsed=time.monotonic() - self._started,
            throttled=self.client.throttled,
        )

    def _summary(self) -> RunSummary:
        remaining = self._waiting_rows(claimable_only=False)
        reason = self._stop_reason or "finished"
        if reason in ("max-duration", "max-items") and not remaining:
            reason = "finished"
        return RunSummary(
            counts={
                k: self._counts[k]
                for k in ("done", "updated", "failed", "retried", "released")
            },
            elapsed=time.monotonic() - self._started,
            requests=self.client.requests,
            throttled=self.client.throttled,
            error_codes=dict(self._codes.most_common()),
            exit_reason=reason,
            remaining=remaining,
            error=self._fatal,
        )

    def _install_signal_handlers(self) -> Callable[[], None]:
        if not self.settings.handle_signals or (
            threading.current_thread() is not threading.main_thread()
        ):
            return lambda: None
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            raise KeyboardInterrupt
        logger.warning(
            "run %s: %s received, finishing requests in flight (again to quit now)",
            self.owner,
            signal.Signals(signum).name,
        )
        self.stop("interrupted")

    # The workers.

    def _work_loop(self) -> None:
        while True:
            claim = self._work.get()
            if claim is _STOP:
                return
            self._results.append(self._attempts.make(claim))
