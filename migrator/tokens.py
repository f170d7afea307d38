"""Batch tokens: fetched from the main API, shared by every thread, renewed in time.

A batch token lets its holder send 200 requests per second to the batch host,
outside the main API's small allowance (reference §1). There is no refresh call: a
new token is asked for before the old one expires, and asking costs one request of
the main API's 1200 per five minutes, so tokens are cached and reused by all
threads. With ``count`` slots, as many tokens are used side by side.

Tokens are wrapped in ``Secret`` from the moment they are parsed: printing,
formatting or logging one shows ``***``, never the value.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from migrator.errors import AuthError

logger = logging.getLogger(__name__)

RENEW_BEFORE_S = 300.0
"""Renew this long before a token expires (less for short-lived tokens)."""

RENEW_FRACTION = 0.2
"""For short-lived tokens: renew once this fraction of the lifetime is left."""

EXPIRY_MARGIN_S = 5.0
"""Stop using a token this long before it expires: a request takes time to land."""

RENEW_RETRY_S = 10.0
"""After a failed early renewal, wait this long before trying again."""


class Secret:
    """A credential that never shows itself in a repr, a str or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the Authorization header and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """A batch token as the main API handed it out."""

    secret: Secret
    lifetime: float
    """Seconds from issue to ``expiresAt``, measured against the server's clock."""


@dataclasses.dataclass(frozen=True)
class TokenLease:
    """A token handed to one request; ``generation`` identifies it for renewal."""

    slot: int
    generation: int
    secret: Secret


@dataclasses.dataclass
class _Slot:
    secret: Secret | None = None
    generation: int = 0
    usable_until: float = 0.0
    renew_at: float = 0.0
    stale: bool = False
    fetching: bool = False
    ready: tuple[TokenLease, float] | None = None
    """The current lease and the time to renew it, replaced in one assignment so
    that ``get`` can read it without the lock."""


class TokenPool:
    """``count`` batch tokens, fetched lazily with ``fetch`` and renewed in time.

    ``get`` returns a valid token for a slot. When a token nears expiry one caller
    renews it while the others keep using the old one; when it has expired, or was
    refused, callers wait for the one fetch in progress. ``fetches`` counts the
    tokens fetched, for the run's summary.
    """

    def __init__(
        self,
        fetch: Callable[[], IssuedToken],
        count: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self._fetch = fetch
        self._clock = clock
        self._slots = [_Slot() for _ in range(count)]
        self._condition = threading.Condition()
        self._refused: AuthError | None = None
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TokenPool(count={len(self._slots)}, fetches={self.fetches})"

    @property
    def count(self) -> int:
        return len(self._slots)

    def get(self, slot: int) -> TokenLease:
        """A token for ``slot``, fetching or renewing it first when needed."""
        state = self._slots[slot]
        ready = state.ready
        if ready is not None and self._clock() < ready[1]:
            return ready[0]
        if self._refused is not None:
            # The API token itself was refused: asking again cannot help, and
            # every ask spends the main API's small allowance.
            raise self._refused
        with self._condition:
            while True:
                now = self._clock()
                usable = (
                    state.secret is not None
                    and not state.stale
                    and now < state.usable_until
                )
                if usable and (now < state.renew_at or state.fetching):
                    assert state.secret is not None
                    return TokenLease(slot, state.generation, state.secret)
                if not state.fetching:
                    state.fetching = True
                    break
                self._condition.wait(timeout=1.0)
        return self._renew(slot, state, renewing_early=usable)

    def invalidate(self, lease: TokenLease) -> None:
        """Mark the token of ``lease`` refused, so the next ``get`` fetches anew.

        Only the token that was refused is dropped: if another thread has already
        replaced it, the new one stays.
        """
        state = self._slots[lease.slot]
        with self._condition:
            if state.generation == lease.generation:
                state.stale = True
                state.ready = None

    def _renew(self, slot: int, state: _Slot, *, renewing_early: bool) -> TokenLease:
        try:
            issued = self._fetch()
        except Exception as error:
            with self._condition:
                if isinstance(error, AuthError):
                    self._refused = error
                state.fetching = False
                state.ready = None
                if renewing_early:
                    state.renew_at = self._clock() + RENEW_RETRY_S
                self._condition.notify_all()
            if not renewing_early:
                raise
            # The current token is still good for a while: keep using it and let
            # a later request try the renewal again.
            logger.warning("batch token %d: early renewal failed", slot, exc_info=True)
            assert state.secret is not None
            return TokenLease(slot, state.generation, state.secret)

        now = self._clock()
        with self._condition:
            state.secret = issued.secret
            state.generation += 1
            state.stale = False
            state.fetching = False
            state.usable_until = (
                now + issued.lifetime - min(EXPIRY_MARGIN_S, issued.lifetime * 0.05)
            )
            state.renew_at = (
                now
                + issued.lifetime
                - min(RENEW_BEFORE_S, issued.lifetime * RENEW_FRACTION)
            )
            self.fetches += 1
            lease = TokenLease(slot, state.generation, issued.secret)
            state.ready = (lease, state.renew_at)
            self._condition.notify_all()
        logger.info(
            "batch token %d: fetched, valid %.0f s (generation %d)",
            slot,
            issued.lifetime,
            lease.generation,
        )
        return lease
