"""Upload by URL: fetch the image from its origin, as Cloudflare would.

Every upload really fetches; nothing is cached. By default only loopback origins
may be fetched (an emulator must never become a way to reach other hosts); more
hosts are allowed by name. An origin that fails, or answers anything but 2xx,
refuses the upload with code 5400 and HTTP 400 (reference section 3: "an origin
error gives a 4xx").
"""

from __future__ import annotations

import ipaddress
import posixpath
from urllib.parse import unquote

import httpx

from migrator import rules
from migrator.emulator.envelope import ApiError, bad_request
from migrator.emulator.settings import Settings

_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5


class Fetcher:
    """An HTTP client for origins, with keep-alive connections shared by uploads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._allowed = frozenset(host.lower() for host in settings.allowed_hosts)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, so that it belongs to the server's event loop.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._settings.fetch_timeout,
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=256),
                headers={"User-Agent": "migrator-emulator"},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch(self, url: str) -> tuple[bytes, str]:
        """Return the bytes at ``url`` and a file name for them.

        Follow up to five redirects, checking each hop's host. Raise ``ApiError``
        5413 past 10 MB, 5400 for a refused host or a failed fetch.
        """
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise bad_request(f"url {url!r} is not a valid URL") from error

        for _ in range(_MAX_REDIRECTS + 1):
            self._check_host(target)
            try:
                data, location = await self._get(target)
            except httpx.HTTPError as error:
                raise bad_request(f"fetching {url} failed: {error!r}") from error
            if location is None:
                return data, _filename(target)
            target = target.join(location)
        raise bad_request(f"fetching {url} met more than {_MAX_REDIRECTS} redirects")

    async def _get(self, target: httpx.URL) -> tuple[bytes, str | None]:
        async with self._http().stream("GET", target) as response:
            if response.status_code in _REDIRECTS and "location" in response.headers:
                return b"", response.headers["location"]
            if not response.is_success:
                raise bad_request(
                    f"the origin answered HTTP {response.status_code} for {target}"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > rules.MAX_FILE_BYTES:
                    raise ApiError(413, 5413, "Image is larger than the 10 MB limit")
                chunks.append(chunk)
            return b"".join(chunks), None

    def _check_host(self, target: httpx.URL) -> None:
        if target.scheme not in ("http", "https"):
            raise bad_request(f"url scheme {target.scheme!r} is not http or https")
        host = target.host.lower()
        if self._settings.allow_any_host or host in self._allowed or _loopback(host):
            return
        raise bad_request(
            f"the emulator may not fetch from {host}: only loopback and allowed hosts"
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _filename(target: httpx.URL) -> str:
    name = posixpath.basename(unquote(target.path)) or target.host
    return name[-255:]
