"""Who may call: API tokens on the main API, batch tokens (JWTs) on the batch host.

A batch token is an HS256 JWT whose ``sub`` is the account hash and whose ``exp``
is the ``expiresAt`` the token call answers (reference section 1). Verified tokens
are remembered, so the hot path is one dictionary look-up rather than a signature
check per request.
"""

from __future__ import annotations

import math
import secrets
import time
from datetime import datetime, timezone

import jwt

from migrator.emulator.envelope import unauthenticated
from migrator.emulator.settings import Settings

_ALGORITHM = "HS256"


def bearer(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, if there is one."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def expires_at(epoch: int) -> str:
    """Format an expiry as Cloudflare does: RFC 3339 UTC with nanosecond digits."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000000000Z")


class Tokens:
    """Issue and check batch tokens; check API tokens."""

    def __init__(self, settings: Settings, signing_key: str) -> None:
        self._settings = settings
        self._key = signing_key
        self._api_tokens = frozenset(settings.api_tokens)
        self._valid: dict[str, int] = {}
        self._expired_early: set[str] = set()

    def check_api_token(self, token: str | None) -> str:
        """Return the API token if it is one of the account's, else raise 10000."""
        if token is None or token not in self._api_tokens:
            raise unauthenticated()
        return token

    def issue(self) -> tuple[str, int]:
        """Return a new batch token and its expiry (Unix seconds).

        Each token carries a random ``jti``, so two tokens issued in the same
        second are distinct and have their own rate limits.
        """
        # Rounded up to whole seconds, as JWT times are: a token lives at least
        # its lifetime, and less than a second more.
        expiry = math.ceil(time.time() + max(self._settings.batch_token_ttl, 1.0))
        claims = {
            "sub": self._settings.account_hash,
            "exp": expiry,
            "iat": int(time.time()),
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        self._valid[token] = expiry
        return token, expiry

    def check_batch_token(self, token: str | None) -> str:
        """Return the batch token if it is valid and unexpired, else raise 10000."""
        if token is None or token in self._expired_early:
            raise unauthenticated()
        expiry = self._valid.get(token)
        if expiry is None:
            expiry = self._decode(token)
        if expiry <= time.time():
            self._valid.pop(token, None)
            raise unauthenticated()
        return token

    def expire(self, token: str) -> None:
        """Refuse a token from now on, as if it had expired early."""
        self._expired_early.add(token)
        self._valid.pop(token, None)

    def forget_expired(self) -> None:
        """Forget early expiries, so every unexpired token works again."""
        self._expired_early.clear()

    def _decode(self, token: str) -> int:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "sub"], "verify_exp": False},
            )
        except jwt.InvalidTokenError as error:
            raise unauthenticated() from error
        if claims["sub"] != self._settings.account_hash:
            raise unauthenticated()
        expiry = int(claims["exp"])
        self._valid[token] = expiry
        return expiry
