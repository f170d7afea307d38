"""Rate limits: a sliding window of recent requests per token, and blocks.

The same mechanism serves both of Cloudflare's limits (reference section 1): 200
requests in any one second per batch token, and 1200 in any five minutes per API
token, where going over blocks every call of that token for five minutes. Refused
requests do not count against the window.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

from migrator.emulator.settings import RateLimit


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether one request may go on, and what the rate-limit headers say."""

    allowed: bool
    remaining: int
    reset: float
    """Seconds until the window has room again (or the block ends)."""


class Limiter:
    """Count each key's requests in a sliding window of ``limit.window`` seconds."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._recent: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}

    def admit(self, key: str, now: float) -> Verdict:
        """Count a request of ``key`` at ``now`` if the limit allows it."""
        blocked_until = self._blocked.get(key)
        if blocked_until is not None:
            if now < blocked_until:
                return Verdict(False, 0, blocked_until - now)
            del self._blocked[key]

        recent = self._recent.setdefault(key, deque())
        horizon = now - self.limit.window
        while recent and recent[0] <= horizon:
            recent.popleft()

        if len(recent) >= self.limit.requests:
            if self.limit.block > 0:
                self._blocked[key] = now + self.limit.block
                recent.clear()
                return Verdict(False, 0, self.limit.block)
            return Verdict(False, 0, recent[0] - horizon)
        recent.append(now)
        reset = recent[0] - horizon
        return Verdict(True, self.limit.requests - len(recent), reset)

    def clear(self) -> None:
        self._recent.clear()
        self._blocked.clear()

    def headers(self, verdict: Verdict) -> dict[str, str]:
        """Return the ``Ratelimit`` headers Cloudflare's main API sends since 2025."""
        window = math.ceil(self.limit.window)
        reset = math.ceil(verdict.reset)
        return {
            "Ratelimit": f'"default";r={verdict.remaining};t={reset}',
            "Ratelimit-Policy": f'"default";q={self.limit.requests};w={window}',
        }
