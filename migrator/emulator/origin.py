"""A local image origin for upload-by-URL: files, synthetic images, dead links.

Paths it serves:

- ``/files/<path>``: a file below the origin's directory.
- ``/synthetic/[<any>/...]<W>x<H>.<ext>``: an image of W by H pixels, made on
  first request and kept in memory, in any format Cloudflare accepts (png, jpg,
  gif, webp, svg, heic) or refuses (tiff, bmp; ``bin`` is not an image at all).
  Query ``size=N`` pads it with zero bytes to N bytes, ``frames=N`` animates a
  GIF, ``delay=S`` waits S seconds before answering. The leading segments are
  free, so that each image of a library can have its own URL.
- ``/status/<code>``: an empty answer with that HTTP status.
- ``/redirect/<path>``: a 302 to ``/<path>``, which may redirect again.
- anything else: 404, a dead link.

A synthetic HEIC is only the container's boxes that carry its size (``ftyp``,
``meta``/``iprp``/``ipco``/``ispe``): enough for the emulator's checks, not a
picture any decoder would show.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs

from PIL import Image
from starlette.types import Receive, Scope, Send

_SYNTHETIC = re.compile(r"(?P<width>\d+)x(?P<height>\d+)\.(?P<ext>[a-z]+)")
_PILLOW_SAVE = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "webp": "WEBP",
    "tiff": "TIFF",
    "bmp": "BMP",
}
_CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "svg": "image/svg+xml",
    "heic": "image/heic",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "bin": "application/octet-stream",
}
_CACHE_ENTRIES = 256
_LARGE_AREA = 4_000_000
"""Above this many pixels a synthetic PNG or GIF is drawn in 1-bit mode, which
keeps even a 100-megapixel image a few megabytes of memory while it is made."""


class Origin:
    """An ASGI application serving images to the emulator's URL fetches."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory.resolve() if directory is not None else None
        self.served: Counter[int] = Counter()
        self._cache: dict[tuple[int, int, str, int, int], bytes] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode())
        status, content_type, body = 404, "text/plain", b"not found"
        extra: list[tuple[bytes, bytes]] = []
        if path.startswith("/synthetic/"):
            delay = float(query.get("delay", ["0"])[0])
            if delay:
                await asyncio.sleep(delay)
            found = self.synthetic(path.rsplit("/", 1)[1], query)
            if found is not None:
                status, (content_type, body) = 200, found
        elif path.startswith("/files/"):
            data = self._file(path[len("/files/") :])
            if data is not None:
                status, content_type, body = 200, _guess_type(path), data
        elif match := re.fullmatch(r"/status/(\d{3})", path):
            status, body = int(match.group(1)), b""
        elif path.startswith("/redirect/"):
            location = path[len("/redirect") :]
            status, body, extra = 302, b"", [(b"location", location.encode())]

        self.served[status] += 1
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})

    def synthetic(
        self, name: str, query: dict[str, list[str]]
    ) -> tuple[str, bytes] | None:
        """Return the content type and bytes of a synthetic image named
        ``<W>x<H>.<ext>``, or None if the name does not say one."""
        found = _SYNTHETIC.fullmatch(name)
        if found is None or found.group("ext") not in _CONTENT_TYPES:
            return None
        ext = found.group("ext")
        size = int(query.get("size", ["0"])[0])
        frames = int(query.get("frames", ["1"])[0])
        key = (int(found.group("width")), int(found.group("height")), ext, size, frames)
        data = self._cache.get(key)
        if data is None:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            data = make_image(*key)
            self._cache[key] = data
        return _CONTENT_TYPES[ext], data

    def _file(self, relative: str) -> bytes | None:
        if self.directory is None:
            return None
        target = (self.directory / relative).resolve()
        if not target.is_relative_to(self.directory) or not target.is_file():
            return None
        return target.read_bytes()


def make_image(
    width: int, height: int, ext: str, size: int = 0, frames: int = 1
) -> bytes:
    """Make an image file of the given size in pixels and format, padded to
    ``size`` bytes with zeros if it is shorter."""
    if ext == "svg":
        data = _svg(width, height)
    elif ext == "heic":
        data = _heic(width, height)
    elif ext == "bin":
        data = bytes(range(256)) * 4
    else:
        data = _raster(width, height, _PILLOW_SAVE[ext], frames)
    return data + bytes(max(0, size - len(data)))


def _raster(width: int, height: int, fmt: str, frames: int) -> bytes:
    large = width * height > _LARGE_AREA
    mode = "1" if large and fmt in ("PNG", "GIF") else ("L" if large else "RGB")
    pictures = [
        Image.new(mode, (width, height), _colour(mode, index))
        for index in range(frames)
    ]
    out = io.BytesIO()
    if frames > 1:
        pictures[0].save(out, fmt, save_all=True, append_images=pictures[1:])
    else:
        pictures[0].save(out, fmt)
    return out.getvalue()


def _colour(mode: str, index: int) -> int | tuple[int, int, int]:
    if mode == "1":
        return index % 2
    if mode == "L":
        return (90 + 40 * index) % 256
    return ((40 * index + 200) % 256, 120, 60)


def _svg(width: int, height: int) -> bytes:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="100%" height="100%" fill="#c8783c"/></svg>'
    ).encode()


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _heic(width: int, height: int) -> bytes:
    full = b"\x00\x00\x00\x00"  # a full box's version and flags
    ispe = _box(b"ispe", full + struct.pack(">II", width, height))
    handler = _box(b"hdlr", full + b"\x00" * 4 + b"pict" + b"\x00" * 13)
    meta = _box(b"meta", full + handler + _box(b"iprp", _box(b"ipco", ispe)))
    return _box(b"ftyp", b"heic" + b"\x00" * 4 + b"mif1heic") + meta


def _guess_type(path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower()
    return _CONTENT_TYPES.get(ext, "application/octet-stream")
