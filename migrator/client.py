"""The only code that speaks HTTP: Cloudflare's main API, its batch host, origins.

One ``httpx.Client`` is shared by every worker thread; its requests travel over
urllib3's connection pools (``migrator.transport``), which cost less CPU. Each
answer is turned into a result or into one exception of ``migrator.errors``, chosen
by ``migrator.envelope`` from Cloudflare's error code first and the HTTP status
second (reference §5); a request that got no answer says whether it may still have
reached Cloudflare.

The client itself repeats only what is certainly safe to repeat: a request refused
with 429 (Cloudflare did nothing with it) after the pause the limiter imposes, and a
request refused for its batch token, once, with a new token. Every other decision
(retry later, fail the row, stop the run) belongs to the runner.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import functools
import io
import logging
import mimetypes
import os
import re
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import IO, Any

import httpx

from migrator.envelope import (
    AUTH_CODES,
    ImageRecord,
    classify,
    error_codes,
    parse_retry_after,
    parse_timestamp,
)
from migrator.errors import (
    ForbiddenEndpointError,
    PermanentApiError,
    SourceError,
    TransientApiError,
    TransportError,
)
from migrator.ratelimit import RateLimiter, WindowBudget
from migrator.rules import MAX_FILE_BYTES, encode_metadata
from migrator.tokens import IssuedToken, Secret, TokenLease, TokenPool
from migrator.transport import PooledTransport

__all__ = [
    "CLOUDFLARE_API_URL",
    "CLOUDFLARE_BATCH_URL",
    "ClientConfig",
    "FilePart",
    "ImageFields",
    "ImageRecord",
    "ImagesClient",
    "SourcePeek",
    "classify",
    "parse_timestamp",
    "shown_source",
    "sniff_content_type",
]

logger = logging.getLogger(__name__)

CLOUDFLARE_API_URL = "https://api.cloudflare.com/client/v4"
CLOUDFLARE_BATCH_URL = "https://batch.imagedelivery.net"

MAIN_API_BUDGET = (1000, 300.0)
"""Requests migrator allows itself on the main API per five minutes.

Cloudflare allows 1200 per user (reference §1); the rest is left to whatever else
uses the same API token while a migration runs.
"""

THROTTLE_RETRIES = 20
"""429s in a row one request may meet before its row is retried later instead."""

LIST_PAGE_SIZE = 100

SMALL_FILE_BYTES = 256 * 1024
"""Files up to this size are sent in one body; larger ones are streamed."""


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Where Cloudflare is and how hard migrator may press on it."""

    account_id: str
    api_token: Secret
    api_url: str = CLOUDFLARE_API_URL
    batch_url: str = CLOUDFLARE_BATCH_URL
    tokens: int = 1
    rate: float = 200.0
    connections: int = 64
    connect_timeout: float = 10.0
    read_timeout: float = 120.0


@dataclasses.dataclass(frozen=True)
class ImageFields:
    """What an upload or an update says about an image besides its bytes."""

    custom_id: str | None = None
    metadata: dict[str, Any] | None = None
    require_signed_urls: bool = False
    creator: str | None = None


@dataclasses.dataclass(frozen=True)
class FilePart:
    """Image bytes to upload: an open binary stream, its name and content type."""

    stream: IO[bytes]
    filename: str
    content_type: str

    @classmethod
    def open(cls, path: str) -> FilePart:
        """Open a local image for streaming; ``SourceError`` if it cannot be read.

        The caller closes ``stream``. The content type comes from the file's first
        bytes, since Cloudflare refuses a part whose type does not match (5455).
        """
        try:
            stream = open(path, "rb")  # noqa: SIM115  (closed by the caller)
        except OSError as error:
            raise SourceError(
                f"{path}: cannot be read: {error.strerror}",
                code="file-unreadable",
                permanent=True,
            ) from error
        head = stream.read(64)
        stream.seek(0)
        return cls(stream, os.path.basename(path), sniff_content_type(head, path))

    @classmethod
    def from_bytes(cls, content: bytes, url: str) -> FilePart:
        """Wrap bytes downloaded from ``url``, named after the URL's last segment."""
        name = os.path.basename(urllib.parse.urlsplit(url).path) or "image"
        return cls(io.BytesIO(content), name, sniff_content_type(content[:64], name))


@dataclasses.dataclass(frozen=True)
class SourcePeek:
    """What an origin answered for the start of a source: see ``peek``."""

    status: int
    size: int | None
    """The whole source's size in bytes, when the origin says."""
    content_type: str | None
    head: bytes


def shown_source(source: str) -> str:
    """A source as log lines and messages show it: a URL loses its user and password.

    Upload by URL accepts ``https://user:pass@host/path`` (reference §3); the
    credentials belong to the origin and must not reach a log or the job table.
    """
    parts = urllib.parse.urlsplit(source)
    if parts.username is None and parts.password is None:
        return source
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def sniff_content_type(head: bytes, name: str = "") -> str:
    """The image type of a file from its first bytes, else from its name."""
    for signature, content_type in _SIGNATURES:
        if head.startswith(signature):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "image/heic"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml", b"<!doctype svg")):
        return "image/svg+xml"
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"})


# httpx parses a URL given as text on every request, a twentieth of its work for
# an upload; a run sends to the same few URLs again and again.
_parsed_url = functools.lru_cache(maxsize=256)(httpx.URL)


class ImagesClient:
    """Cloudflare Images for migrator: batch tokens, rate, errors, one pool."""

    def __init__(
        self, config: ClientConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.config = config
        self._http = httpx.Client(
            timeout=httpx.Timeout(
                config.read_timeout, connect=config.connect_timeout, pool=None
            ),
            transport=transport or PooledTransport(config.connections),
            follow_redirects=False,
        )
        self.limiter = RateLimiter(config.rate, config.tokens)
        self.main_budget = WindowBudget(*MAIN_API_BUDGET)
        self.tokens = TokenPool(self.fetch_batch_token, config.tokens)
        self._account_url = (
            f"{config.api_url.rstrip('/')}/accounts/"
            f"{urllib.parse.quote(config.account_id, safe='')}/images"
        )
        self._batch_url = f"{config.batch_url.rstrip('/')}/images"
        self._list_on_batch_host = True
        self._count_lock = threading.Lock()
        self.requests = 0
        self.throttled = 0

    def __repr__(self) -> str:
        return f"ImagesClient(api_url={self.config.api_url!r}, tokens={self.tokens!r})"

    def close(self) -> None:
        """Close every pooled connection."""
        self._http.close()

    def __enter__(self) -> ImagesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The main API, with the API token.

    def fetch_batch_token(self) -> IssuedToken:
        """Ask the main API for a new batch token (reference §1)."""
        response = self._main("GET", "/v1/batch_token", operation="batch token")
        result = _result(response, "batch token")
        if not isinstance(result, dict) or not isinstance(result.get("token"), str):
            raise TransientApiError(
                "batch token: Cloudflare answered without a token; will retry",
                code=None,
                http_status=response.status_code,
            )
        expires_at = parse_timestamp(result.get("expiresAt"))
        issued_at = _server_time(response)
        lifetime = (expires_at - issued_at).total_seconds() if expires_at else 0.0
        return IssuedToken(Secret(result["token"]), max(lifetime, 1.0))

    # The batch host, with batch tokens.

    def upload_url(self, url: str, fields: ImageFields) -> ImageRecord:
        """Have Cloudflare fetch ``url`` and store it as a new image."""
        body, content_type = _multipart([*_form(fields), ("url", url)])
        headers = {"Content-Type": content_type}
        response = self._batch(
            "POST",
            "/v1",
            "upload",
            lambda: {"content": body, "headers": headers},
        )
        return ImageRecord.from_result(_result(response, "upload"))

    def upload_file(self, part: FilePart, fields: ImageFields) -> ImageRecord:
        """Send ``part`` to Cloudflare as a new image (multipart ``file``).

        A small file goes in one body; a larger one is streamed, so memory stays
        flat whatever the image size and the number of workers.
        """
        form = _form(fields)

        def build() -> dict[str, Any]:
            part.stream.seek(0)
            head = part.stream.read(SMALL_FILE_BYTES + 1)
            if len(head) <= SMALL_FILE_BYTES:
                body, content_type = _multipart(form, (part, head))
                return {"content": body, "headers": {"Content-Type": content_type}}
            part.stream.seek(0)
            files: list[tuple[str, Any]] = [(k, (None, v)) for k, v in form]
            files.append(("file", (part.filename, part.stream, part.content_type)))
            return {"files": files}

        response = self._batch("POST", "/v1", "upload", build)
        return ImageRecord.from_result(_result(response, "upload"))

    def details(self, image_id: str) -> ImageRecord:
        """The image stored under ``image_id``; ``NotFoundError`` if none."""
        path = f"/v1/{_quote(image_id)}"
        response = self._batch("GET", path, "details", dict)
        return ImageRecord.from_result(_result(response, "details"))

    def update(self, image_id: str, fields: ImageFields) -> ImageRecord:
        """Replace the metadata, signed-URL flag and creator of ``image_id``."""
        body: dict[str, Any] = {
            "metadata": fields.metadata or {},
            "requireSignedURLs": fields.require_signed_urls,
        }
        if fields.creator is not None:
            body["creator"] = fields.creator
        path = f"/v1/{_quote(image_id)}"
        response = self._batch("PATCH", path, "update", lambda: {"json": body})
        return ImageRecord.from_result(_result(response, "update"))

    def find(self, field: str, value: str) -> list[ImageRecord]:
        """Every image whose metadata ``field`` equals ``value``, oldest first.

        Lists on the batch host; if that host refuses list v2 (reference §1), this
        and every later call list through the main API instead.
        """
        params = {
            f"meta.{field}[eq]": value,
            "per_page": str(LIST_PAGE_SIZE),
            "sort_order": "asc",
        }
        if self._list_on_batch_host:
            try:
                return list(self._list(params, on_batch_host=True))
            except (ForbiddenEndpointError, _NoRoute):
                logger.warning(
                    "batch host refused list v2: listing through the main API instead"
                )
                self._list_on_batch_host = False
        return list(self._list(params, on_batch_host=False))

    # Origins, without credentials.

    def peek(self, url: str, length: int = 64 * 1024) -> SourcePeek:
        """Ask an origin for the first ``length`` bytes of ``url`` (a ranged GET).

        Enough to tell an image's format and size in pixels without fetching it
        all; an origin that ignores ``Range`` is cut off after ``length`` bytes.
        Raises ``SourceError`` (``origin-unreachable``) when no answer comes.
        """
        headers = {"Range": f"bytes=0-{length - 1}"}
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                head = bytearray()
                if response.status_code < 400:
                    for chunk in response.iter_bytes():
                        head += chunk
                        if len(head) >= length:
                            break
        except httpx.HTTPError as error:
            raise _unreachable_origin(url, error) from error
        return SourcePeek(
            status=response.status_code,
            size=_total_size(response),
            content_type=response.headers.get("content-type"),
            head=bytes(head[:length]),
        )

    def download(self, url: str) -> bytes:
        """Fetch an image from its origin, for ``--fetch-local`` (at most 10 MB)."""
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise SourceError(
                        f"{shown_source(url)}: the origin answered HTTP "
                        f"{response.status_code}",
                        code=f"origin-{response.status_code}",
                        permanent=400 <= response.status_code < 500
                        and response.status_code not in (408, 429),
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        raise SourceError(
                            f"{shown_source(url)}: larger than {MAX_FILE_BYTES} bytes, "
                            "Cloudflare's limit",
                            code="5413",
                            permanent=True,
                        )
                    chunks.append(chunk)
        except httpx.HTTPError as error:
            raise _unreachable_origin(url, error) from error
        return b"".join(chunks)

    # Requests.

    def _main(
        self, method: str, path: str, *, operation: str, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.config.api_token.reveal()}"}
        for _ in range(THROTTLE_RETRIES):
            self.main_budget.acquire()
            response = self._send(
                method, self._account_url + path, operation, headers=headers, **kwargs
            )
            if response.status_code != 429:
                return response
            self.main_budget.throttle(_retry_after(response))
        return response

    def _batch(
        self,
        method: str,
        path: str,
        operation: str,
        build: Callable[[], dict[str, Any]],
    ) -> httpx.Response:
        refreshed = False
        throttled = 0
        while True:
            slot = self.limiter.acquire()
            lease = self.tokens.get(slot)
            request = build()
            request["headers"] = {**request.get("headers", {}), **_bearer(lease)}
            self.limiter.admit(slot)
            response = self._send(method, self._batch_url + path, operation, **request)
            if response.status_code == 429 and throttled < THROTTLE_RETRIES:
                # A 429 was refused before any work: safe to send again once the
                # limiter's pause is over.
                throttled += 1
                self.limiter.throttle(_retry_after(response))
                continue
            if _is_auth_failure(response) and not refreshed:
                refreshed = True
                logger.info("batch token %d: refused, fetching a new one", slot)
                self.tokens.invalidate(lease)
                continue
            return response

    def _send(
        self, method: str, url: str, operation: str, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._http.request(method, _parsed_url(url), **kwargs)
        except httpx.HTTPError as error:
            raise _transport_error(error, operation) from error
        with self._count_lock:
            self.requests += 1
            if response.status_code == 429:
                self.throttled += 1
        return response

    def _list(self, params: dict[str, str], *, on_batch_host: bool) -> Iterator[Any]:
        query = dict(params)
        while True:
            if on_batch_host:
                response = self._batch("GET", "/v2", "list", lambda: {"params": query})
            else:
                response = self._main("GET", "/v2", operation="list", params=query)
            try:
                result = _result(response, "list")
            except PermanentApiError as error:
                if on_batch_host and error.code in (None, "7003"):
                    raise _NoRoute(str(error)) from error
                raise
            for item in result.get("images") or ():
                yield ImageRecord.from_result(item)
            token = result.get("continuation_token")
            if not token:
                return
            query["continuation_token"] = token


class _NoRoute(Exception):
    """The batch host has no list v2 route: fall back to the main API."""


def _bearer(lease: TokenLease) -> dict[str, str]:
    return {"Authorization": f"Bearer {lease.secret.reveal()}"}


def _quote(image_id: str) -> str:
    # Custom IDs may hold '/', '?', '#' and UTF-8; the path carries them encoded
    # (reference §3).
    return urllib.parse.quote(image_id, safe="")


def _form(fields: ImageFields) -> list[tuple[str, str]]:
    form: list[tuple[str, str]] = []
    if fields.custom_id is not None:
        form.append(("id", fields.custom_id))
    if fields.metadata:
        form.append(("metadata", encode_metadata(fields.metadata)))
    form.append(
        ("requireSignedURLs", "true" if fields.require_signed_urls else "false")
    )
    if fields.creator is not None:
        form.append(("creator", fields.creator))
    return form


def _multipart(
    form: list[tuple[str, str]], file: tuple[FilePart, bytes] | None = None
) -> tuple[bytes, str]:
    """Encode fields (and a small file) as one multipart/form-data body.

    Built in one piece because httpx writes each part of a multipart body to the
    socket separately, a dozen system calls for a few hundred bytes, and that
    was most of an upload's CPU time. Returns the body and its content type.
    """
    # Field names are ours (ASCII); values are UTF-8 text, which multipart carries
    # as is. A random boundary of 128 bits never occurs inside a value.
    boundary = secrets.token_hex(16)
    chunks = []
    for name, value in form:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        chunks.append(f"{head}\r\n\r\n{value}\r\n".encode())
    if file is not None:
        part, content = file
        filename = re.sub(r'["\\\r\n]', "_", part.filename)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: {part.content_type}'
        )
        chunks.append(f"{head}\r\n\r\n".encode() + content + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _is_auth_failure(response: httpx.Response) -> bool:
    """A refused batch token: 10000, or 401/403 with no other code (§1, §5)."""
    if response.is_success:
        return False
    codes = error_codes(_json(response))
    if codes:
        return codes[0] in AUTH_CODES
    return response.status_code in (401, 403)


def _result(response: httpx.Response, operation: str) -> Any:
    """The ``result`` of a success envelope, or the exception its failure means."""
    body = _json(response)
    if response.is_success and isinstance(body, dict) and body.get("success"):
        return body.get("result")
    raise classify(response.status_code, body, operation, _retry_after(response))


def _unreachable_origin(url: str, error: httpx.HTTPError) -> SourceError:
    """An origin that gave no answer: worth trying again later."""
    return SourceError(
        f"{shown_source(url)}: the origin could not be reached: {_describe(error)}",
        code="origin-unreachable",
        permanent=False,
    )


def _transport_error(error: httpx.HTTPError, operation: str) -> TransportError:
    """Say whether a request that got no answer may still have been acted on."""
    # Connecting failed or no pooled connection came free: nothing was sent.
    not_sent = isinstance(error, (httpx.ConnectError, httpx.PoolTimeout))
    if isinstance(error, httpx.ConnectTimeout):
        not_sent = True
    return TransportError(
        f"{operation}: no answer from Cloudflare: {_describe(error)}",
        may_have_reached=not not_sent,
    )


def _total_size(response: httpx.Response) -> int | None:
    """A source's full size: from ``Content-Range`` for a 206, else the length."""
    content_range = response.headers.get("content-range", "")
    total = content_range.rpartition("/")[2]
    if total.isdigit():
        return int(total)
    length = response.headers.get("content-length", "")
    if response.status_code == 200 and length.isdigit():
        return int(length)
    return None


def _describe(error: httpx.HTTPError) -> str:
    detail = str(error) or type(error).__name__
    return f"{type(error).__name__}: {detail}" if str(error) else detail


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"))


def _server_time(response: httpx.Response) -> dt.datetime:
    """The server's clock from the Date header, else ours."""
    value = response.headers.get("date")
    if value:
        try:
            return email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            pass
    return dt.datetime.now(dt.timezone.utc)
