"""Cloudflare's response envelope, and the errors that end a request with one.

Every API answer, success or failure, is ``{"result", "success", "errors",
"messages"}`` (reference section 2). A handler returns a result or raises
``ApiError``; the application turns either into the envelope.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response


class ApiError(Exception):
    """A request refused with a Cloudflare error code, an HTTP status and headers."""

    def __init__(
        self,
        status: int,
        code: int | str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    """Refuse a malformed request: code 5400, HTTP 400."""
    return ApiError(400, 5400, f"Bad request: {message}")


def not_found(image_id: str) -> ApiError:
    """Refuse an unknown image: code 5404, HTTP 404."""
    return ApiError(404, 5404, f"Image not found: {image_id}")


def too_large() -> ApiError:
    """Refuse an image over 10 MB: code 5413, HTTP 413."""
    return ApiError(413, 5413, "Image is larger than the 10 MB limit")


def unauthenticated() -> ApiError:
    """Refuse a missing, unknown, expired or misplaced token: code 10000, HTTP 401."""
    return ApiError(401, 10000, "Authentication error")


def throttled(retry_after: float) -> ApiError:
    """Refuse a request over a rate limit: HTTP 429 with ``Retry-After``.

    Cloudflare's API answers throttling with code 971; Retry-After is whole
    seconds, at least one.
    """
    seconds = max(1, int(retry_after + 0.999))
    return ApiError(
        429,
        971,
        "Please wait and consider throttling your request speed",
        {"Retry-After": str(seconds)},
    )


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def success(result: Any, headers: dict[str, str] | None = None) -> Response:
    """Wrap a result in the success envelope, with HTTP 200."""
    body = {"result": result, "success": True, "errors": [], "messages": []}
    return Response(_encode(body), 200, headers, "application/json")


def failure(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    """Wrap an error in the failure envelope, with its status and headers."""
    body = {
        "result": None,
        "success": False,
        "errors": [{"code": error.code, "message": error.message}],
        "messages": [],
    }
    merged = {**error.headers, **(headers or {})}
    return Response(_encode(body), error.status, merged, "application/json")
