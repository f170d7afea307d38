"""Fault injection: the failures a migration must survive, drawn at random.

Each fault is a rate (the chance that one API request meets it) or a duration,
drawn from one random generator seeded by ``seed``, so a run with the same seed
and the same sequence of requests meets the same faults. Faults touch the API
routes of both hosts and the direct-upload target, never ``/_emulator``; only
requests that pass authentication and rate limits meet them (early expiry is
itself a refusal of the token).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from migrator.emulator.envelope import ApiError, throttled

_SERVER_ERRORS = (
    (500, 5500, "Internal error"),
    (503, 5503, "Service unavailable, please retry"),
)


@dataclasses.dataclass(frozen=True)
class Faults:
    """What goes wrong, and how often. Every rate is a probability per request."""

    error_rate: float = 0.0
    """Answer 500 (code 5500) or 503 (code 5503) without handling the request."""
    throttle_rate: float = 0.0
    """Answer one request 429 with Retry-After: 1."""
    storm_rate: float = 0.0
    """Start a 429 storm: every request is refused for ``storm_seconds``."""
    storm_seconds: float = 5.0
    latency: float = 0.0
    """Seconds added before every answer."""
    latency_jitter: float = 0.0
    """Up to this many more seconds, drawn uniformly, added to ``latency``."""
    drop_rate: float = 0.0
    """Handle the request (an upload is stored), then close the connection halfway
    through the answer, so the client cannot know the outcome."""
    lose_rate: float = 0.0
    """Close the connection the same way without handling the request (nothing
    is stored): to the client it looks just like a drop."""
    slow_rate: float = 0.0
    """Send the answer's headers at once and its body in two halves, each after
    half of ``slow_seconds``: a client reading with a shorter timeout gives up."""
    slow_seconds: float = 2.0
    expire_rate: float = 0.0
    """Refuse a valid batch token with 10000 and keep refusing it, as if it had
    expired early."""
    seed: int | None = None

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Build from ``name=value,name=value`` (the command line's form)."""
        values: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, equals, value = item.partition("=")
            if not equals:
                raise ValueError(f"fault {item!r} needs a value: write {item}=VALUE")
            values[name.strip().replace("-", "_")] = value.strip()
        return cls().updated(values)

    def updated(self, values: dict[str, Any]) -> Faults:
        """Return a copy with some fields changed, checking names and ranges."""
        fields = {field.name: field for field in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if name not in fields:
                known = ", ".join(fields)
                raise ValueError(f"unknown fault {name!r}; known faults: {known}")
            if name == "seed":
                changes[name] = None if value is None else int(value)
                continue
            number = float(value)
            if number < 0 or (name.endswith("_rate") and number > 1):
                raise ValueError(f"fault {name}={value} is out of range")
            changes[name] = number
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What happens to one request."""

    delay: float = 0.0
    error: ApiError | None = None
    drop: bool = False
    lose: bool = False
    slow: float = 0.0
    expire: bool = False

    @property
    def name(self) -> str | None:
        """Name the fault drawn, for the stats, if any."""
        if self.error is not None:
            return "throttle" if self.error.status == 429 else "server_error"
        if self.drop:
            return "drop"
        if self.lose:
            return "lose"
        if self.slow:
            return "slow"
        if self.expire:
            return "expire"
        return None


NO_FAULT = Decision()


class FaultPlan:
    """Draw the faults of each request from the configured rates."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._random = random.Random(faults.seed)
        self._storm_until = 0.0
        self.idle = faults == Faults(seed=faults.seed)

    def decide(self, now: float) -> Decision:
        """Draw the faults met by a request arriving at ``now``."""
        if self.idle:
            return NO_FAULT
        faults, draw = self.faults, self._random.random
        delay = faults.latency + faults.latency_jitter * draw()

        if now < self._storm_until:
            return Decision(delay, error=throttled(self._storm_until - now))
        if draw() < faults.storm_rate:
            self._storm_until = now + faults.storm_seconds
            return Decision(delay, error=throttled(faults.storm_seconds))
        if draw() < faults.throttle_rate:
            return Decision(delay, error=throttled(1))
        if draw() < faults.error_rate:
            status, code, message = self._random.choice(_SERVER_ERRORS)
            return Decision(delay, error=ApiError(status, code, message))
        if draw() < faults.expire_rate:
            return Decision(delay, expire=True)
        if draw() < faults.drop_rate:
            return Decision(delay, drop=True)
        if draw() < faults.lose_rate:
            return Decision(delay, lose=True)
        if draw() < faults.slow_rate:
            return Decision(delay, slow=faults.slow_seconds)
        return Decision(delay)
