"""Reading Cloudflare's answers: the envelope, its error codes and their kinds.

Every answer of the Images API is an envelope (reference §2): ``result`` on
success, ``errors`` with numeric codes on failure. This module turns a failure
into the exception of ``migrator.errors`` that says what to do about it, by
Cloudflare's code first and the HTTP status second (reference §5), and reads the
image objects and timestamps a success carries. It knows nothing of HTTP
transport; ``migrator.client`` hands it statuses, headers and parsed bodies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import re
from typing import Any

from migrator.errors import (
    AccountStoppedError,
    AlreadyExistsError,
    ApiError,
    AuthError,
    ForbiddenEndpointError,
    NotFoundError,
    PermanentApiError,
    RateLimitedError,
    TransientApiError,
)

# Reference §5: the kind of each documented code.
_TRANSIENT_CODES = frozenset(
    {"5408", "5433", "5450", "5500", "5503", "5550"}
    | {str(code) for code in range(5540, 5545)}
)
_PERMANENT_CODES = frozenset({"5400", "5401", "5413", "5415", "5455", "7003"})
_STOP_CODES = frozenset({"5403", "5453"})
AUTH_CODES = frozenset({"10000"})
_FORBIDDEN_ENDPOINT_CODE = "103"

_FRACTION = re.compile(r"(\.\d{1,6})\d*")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """An image as Cloudflare describes it (upload, details, update, list)."""

    id: str
    variants: tuple[str, ...]
    uploaded_at: dt.datetime | None
    meta: dict[str, Any]
    require_signed_urls: bool
    creator: str | None

    @classmethod
    def from_result(cls, result: Any) -> ImageRecord:
        """Read a result object; ``meta`` is also accepted as ``metadata`` (§3)."""
        if not isinstance(result, dict) or not isinstance(result.get("id"), str):
            raise TransientApiError(
                "Cloudflare answered without an image object; will retry",
                code=None,
                http_status=200,
            )
        meta = result.get("meta", result.get("metadata")) or {}
        return cls(
            id=result["id"],
            variants=tuple(result.get("variants") or ()),
            uploaded_at=parse_timestamp(result.get("uploaded")),
            meta=meta if isinstance(meta, dict) else {},
            require_signed_urls=bool(result.get("requireSignedURLs", False)),
            creator=result.get("creator"),
        )


def classify(
    status: int, body: Any, operation: str, retry_after: float | None = None
) -> ApiError:
    """The exception for a failed answer: by Cloudflare's code, else by status."""
    codes = error_codes(body)
    code = codes[0] if codes else None
    message = _messages(body) or f"HTTP {status}"
    text = f"{operation}: Cloudflare refused it: {message}" + (
        f" (code {code}, HTTP {status})" if code else f" (HTTP {status})"
    )

    if code in AUTH_CODES:
        return AuthError(
            f"{text}; check the API token and its Images permission",
            code=code,
            http_status=status,
        )
    if code in _STOP_CODES:
        return AccountStoppedError(text, code=code, http_status=status)
    if code == "5409":
        return AlreadyExistsError(text, code=code, http_status=status)
    if code == "5404":
        return NotFoundError(text, code=code, http_status=status)
    if code == _FORBIDDEN_ENDPOINT_CODE:
        return ForbiddenEndpointError(text, code=code, http_status=status)
    if code in _TRANSIENT_CODES:
        return TransientApiError(text, code=code, http_status=status)
    if code in _PERMANENT_CODES:
        return PermanentApiError(text, code=code, http_status=status)

    if status == 429:
        return RateLimitedError(
            text, code=code, http_status=status, retry_after=retry_after
        )
    if status in (401, 403):
        return AuthError(text, code=code, http_status=status)
    if status == 408 or status >= 500 or 200 <= status < 300:
        # A 2xx without a readable envelope is a broken answer, not a verdict.
        return TransientApiError(text, code=code, http_status=status)
    return PermanentApiError(text, code=code, http_status=status)


def error_codes(body: Any) -> list[str]:
    """The codes of a failure envelope's errors, as strings, in order."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return []
    return [
        str(item["code"])
        for item in body["errors"]
        if isinstance(item, dict) and item.get("code") is not None
    ]


def _messages(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return ""
    return "; ".join(
        str(item.get("message", "")).strip()
        for item in body["errors"]
        if isinstance(item, dict)
    )


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, given as seconds or as an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Read an RFC 3339 timestamp with up to nanosecond digits, as aware UTC."""
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)
