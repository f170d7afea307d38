"""Upload by URL: fetch the image from its origin, as Cloudflare would.

Every upload really fetches; nothing is cached. By default only loopback origins
may be fetched (an emulator must never become a way to reach other hosts); more
hosts are allowed by name. An origin that fails, or answers anything but 2xx,
refuses the upload with code 5400 and HTTP 400 (reference section 3: "an origin
error gives a 4xx").

Plain-HTTP origins, the case of every test and benchmark, are fetched by a small
HTTP/1.1 client on asyncio streams with keep-alive connections: profiling showed
httpx's connection pool taking most of an upload's time at high concurrency.
HTTPS origins (allowed hosts only) go through httpx.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import posixpath
from collections import defaultdict
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import httpx

from migrator import rules
from migrator.emulator.envelope import bad_request, too_large
from migrator.emulator.settings import Settings

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_IDLE_PER_ORIGIN = 256


class OriginAnswer:
    """What an origin answered: status, lower-cased headers, body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connections:
    """Idle keep-alive connections to plain-HTTP origins, by host and port."""

    def __init__(self) -> None:
        self._idle: dict[
            tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        ] = defaultdict(list)

    async def get(self, url: SplitResult, headers: str) -> OriginAnswer:
        """GET one URL; a reused connection the origin has closed is retried once
        on a new one."""
        host, port = url.hostname or "", url.port or 80
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        request = f"GET {target} HTTP/1.1\r\nHost: {url.netloc.rpartition('@')[2]}\r\n"
        data = (request + headers + "\r\n").encode("latin-1")
        idle = self._idle[host, port]
        while idle:
            reader, writer = idle.pop()
            if reader.at_eof():
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, data, idle)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                break
        reader, writer = await asyncio.open_connection(host, port)
        return await self._exchange(reader, writer, data, idle)

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        data: bytes,
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    ) -> OriginAnswer:
        try:
            writer.write(data)
            head = await reader.readuntil(b"\r\n\r\n")
            status, headers, keep = _parse_head(head)
            body = await _read_body(reader, headers, keep)
        except BaseException:
            writer.close()
            raise
        if keep and len(idle) < _IDLE_PER_ORIGIN:
            idle.append((reader, writer))
        else:
            writer.close()
        return OriginAnswer(status, headers, body)

    def close(self) -> None:
        for idle in self._idle.values():
            for _, writer in idle:
                writer.close()
        self._idle.clear()


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status = int(rest[:3])
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return status, headers, keep


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], keep: bool
) -> bytes:
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > rules.MAX_FILE_BYTES:
            raise too_large()
        return await reader.readexactly(length)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return await _read_chunked(reader)
    if keep:
        return b""
    body = await reader.read(rules.MAX_FILE_BYTES + 1)
    while len(body) <= rules.MAX_FILE_BYTES and not reader.at_eof():
        body += await reader.read(rules.MAX_FILE_BYTES + 1 - len(body))
    if len(body) > rules.MAX_FILE_BYTES:
        raise too_large()
    return body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        length = int(line.split(b";")[0], 16)
        if length == 0:
            await reader.readuntil(b"\r\n")  # the end of the (empty) trailer
            return b"".join(chunks)
        size += length
        if size > rules.MAX_FILE_BYTES:
            raise too_large()
        chunks.append(await reader.readexactly(length))
        await reader.readexactly(2)


class Fetcher:
    """Fetch origins for upload-by-URL, keeping connections alive between uploads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._allowed = frozenset(host.lower() for host in settings.allowed_hosts)
        self._plain = _Connections()
        self._secure: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        self._plain.close()
        if self._secure is not None:
            await self._secure.aclose()
            self._secure = None

    async def fetch(self, url: str) -> tuple[bytes, str]:
        """Return the bytes at ``url`` and a file name for them.

        Follow up to five redirects, checking each hop's host. Raise ``ApiError``
        5413 past 10 MB, 5400 for a refused host or a failed or slow fetch.
        """
        target = urlsplit(url)
        for _ in range(_MAX_REDIRECTS + 1):
            self._check_host(target, url)
            try:
                answer = await asyncio.wait_for(
                    self._get(target), self._settings.fetch_timeout
                )
            except asyncio.TimeoutError as error:
                raise bad_request(f"fetching {url} timed out") from error
            except (OSError, ValueError, EOFError, httpx.HTTPError) as error:
                raise bad_request(f"fetching {url} failed: {error!r}") from error
            if answer.status in _REDIRECTS and "location" in answer.headers:
                target = urlsplit(urljoin(target.geturl(), answer.headers["location"]))
                continue
            if not 200 <= answer.status < 300:
                raise bad_request(
                    f"the origin answered HTTP {answer.status} for {target.geturl()}"
                )
            return answer.body, _filename(target)
        raise bad_request(f"fetching {url} met more than {_MAX_REDIRECTS} redirects")

    async def _get(self, target: SplitResult) -> OriginAnswer:
        if target.scheme == "http":
            return await self._plain.get(target, _headers(target))
        async with self._secure_client().stream("GET", target.geturl()) as response:
            chunks: list[bytes] = []
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                if sum(map(len, chunks)) > rules.MAX_FILE_BYTES:
                    raise too_large()
            body = b"".join(chunks)
            return OriginAnswer(response.status_code, dict(response.headers), body)

    def _secure_client(self) -> httpx.AsyncClient:
        # Created on first use, so that it belongs to the server's event loop.
        if self._secure is None:
            self._secure = httpx.AsyncClient(
                timeout=self._settings.fetch_timeout,
                headers={"User-Agent": "migrator-emulator"},
            )
        return self._secure

    def _check_host(self, target: SplitResult, url: str) -> None:
        if target.scheme not in ("http", "https") or not target.hostname:
            raise bad_request(f"url {url!r} is not an http or https URL")
        host = target.hostname.lower()
        if self._settings.allow_any_host or host in self._allowed or _loopback(host):
            return
        raise bad_request(
            f"the emulator may not fetch from {host}: only loopback and allowed hosts"
        )


def _headers(target: SplitResult) -> str:
    headers = "User-Agent: migrator-emulator\r\nAccept: */*\r\n"
    if target.username is not None:
        # https://user:pass@host/path is allowed (reference section 3).
        pair = f"{unquote(target.username)}:{unquote(target.password or '')}"
        headers += (
            f"Authorization: Basic {base64.b64encode(pair.encode()).decode()}\r\n"
        )
    return headers


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _filename(target: SplitResult) -> str:
    name = posixpath.basename(unquote(target.path)) or (target.hostname or "image")
    return name[-255:]
