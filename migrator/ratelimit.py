"""Pacing requests so that Cloudflare never has to refuse one.

The batch host allows 200 requests per second per batch token (reference §1). A
``RateLimiter`` spaces requests evenly over a set of token slots, each kept under
its own rate, so a healthy run sees no 429 at all. When a 429 arrives anyway, every
slot pauses for the ``Retry-After`` it carried and slows down, then speeds back up
to the configured rate over the following seconds.

The main API has a separate, much smaller budget per user (1200 requests in five
minutes, with a five-minute block for going over): ``WindowBudget`` keeps
migrator's own share of it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

HEADROOM = 0.97
"""Fraction of the allowed rate actually used.

Requests leave evenly spaced but reach the server with a few milliseconds of
scheduling jitter; a counter over any one-second window can then see slightly more
than the mean. Three per cent absorbs that without visible loss of throughput.
"""

SLOWDOWN = 0.75
"""Factor the rate is multiplied by on each 429.

Under migrator's own pacing a 429 usually means the server saw a burst (its
clock and ours disagree for a moment), not that the limit is lower than we
think: a gentle cut, repeated if the 429s go on, costs less than halving.
"""

BURST_SPACING = 0.5
"""Least gap between two sends on one slot, as a fraction of the pacing interval:
late requests catch up at twice the rate at most, never all in one instant."""

RECOVERY_PER_SECOND = 0.1
"""Fraction of the full rate regained each second after the last 429."""

MIN_FACTOR = 0.05
"""The slowest the limiter ever goes, as a fraction of the configured rate."""

DEFAULT_RETRY_AFTER_S = 1.0
"""Pause used when a 429 carries no usable ``Retry-After``."""


class RateLimiter:
    """Spread requests over ``slots`` token slots, each under ``rate`` per second.

    ``acquire`` blocks until a request may leave and returns the slot it must use:
    the one free soonest, so the slots share the load evenly. It is safe to call
    from any number of threads.
    """

    def __init__(
        self,
        rate: float,
        slots: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_free = [clock()] * slots
        self._cap = max(1, int(rate * HEADROOM))
        self._sent: list[collections.deque[float]] = [
            collections.deque() for _ in range(slots)
        ]
        self._paused_until = 0.0
        self._factor_at_throttle = 1.0
        self._throttled_at: float | None = None
        self.throttled = 0

    def acquire(self) -> int:
        """Wait for the next free moment on the least busy slot, and return it.

        The caller then calls ``admit`` with the slot right before sending.
        """
        with self._lock:
            now = self._clock()
            slot = min(range(len(self._next_free)), key=self._next_free.__getitem__)
            start = max(now, self._next_free[slot], self._paused_until)
            self._next_free[slot] = start + 1.0 / self._current_rate(now)
        if start > now:
            self._sleep(start - now)
        return slot

    def admit(self, slot: int) -> None:
        """Hold a request while its slot already sent a full second's worth.

        Pacing spaces the reservations, but a thread that wakes late sends late,
        and several late ones would leave together: at the start of a run, every
        worker that reserved a moment while the first batch token was being
        fetched. Counting sends over the last second at the last moment before
        each one, as the server counts arrivals, keeps such a burst under the
        limit; spacing each send at least ``BURST_SPACING`` of the pacing
        interval after the one before keeps it from arriving all at once, where
        a few milliseconds between our clock and the server's would put the
        whole burst inside the server's second along with a full second's
        worth after it.
        """
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_to_send(slot, now)
                if wait <= 0:
                    self._sent[slot].append(now)
                    return
            self._sleep(wait)

    def _wait_to_send(self, slot: int, now: float) -> float:
        """How long ``slot`` must wait before its next send (lock held)."""
        sent = self._sent[slot]
        while sent and sent[0] <= now - 1.0:
            sent.popleft()
        if len(sent) >= self._cap:
            return sent[0] + 1.0 - now
        if not sent:
            return 0.0
        return sent[-1] + BURST_SPACING / self._current_rate(now) - now

    def throttle(self, retry_after: float | None) -> None:
        """Record a 429: every slot pauses ``retry_after`` seconds, then goes slower.

        Several workers usually see the same storm at once; the pause is the
        longest asked for, and the rate halves at most once per pause.
        """
        pause = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER_S
        with self._lock:
            now = self._clock()
            self.throttled += 1
            if now >= self._paused_until:
                self._factor_at_throttle = max(MIN_FACTOR, self._factor(now) * SLOWDOWN)
                self._throttled_at = now + pause
                logger.warning(
                    "rate limit hit: pausing %.1f s, then %.0f requests/s per token",
                    pause,
                    self._current_rate(now + pause),
                )
            self._paused_until = max(self._paused_until, now + pause)

    def current_rate(self) -> float:
        """Requests per second per slot allowed right now."""
        with self._lock:
            return self._current_rate(self._clock())

    def _current_rate(self, now: float) -> float:
        return self.rate * HEADROOM * self._factor(now)

    def _factor(self, now: float) -> float:
        if self._throttled_at is None:
            return 1.0
        recovered = RECOVERY_PER_SECOND * max(0.0, now - self._throttled_at)
        factor = min(1.0, self._factor_at_throttle + recovered)
        if factor >= 1.0:
            self._throttled_at = None
        return factor


class WindowBudget:
    """At most ``limit`` requests in any ``window`` seconds; ``acquire`` waits.

    For the main API, whose allowance is counted per user over five minutes and
    shared with whatever else uses the same API token.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: collections.deque[float] = collections.deque()
        self._paused_until = 0.0

    def acquire(self) -> None:
        """Wait until one more request fits in the window, and count it."""
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self.window:
                    self._sent.popleft()
                wait = self._paused_until - now
                if wait <= 0 and len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                if wait <= 0:
                    wait = self._sent[0] + self.window - now
            logger.warning("main API budget spent: waiting %.1f s", wait)
            self._sleep(wait)

    def throttle(self, retry_after: float | None) -> None:
        """Record a 429 from the main API: nothing more is sent until it passes."""
        pause = retry_after if retry_after is not None else self.window
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + pause)
