"""What an uploaded file is: its format and size in pixels, read from its bytes.

PNG and JPEG, most of any library, have their size read from their headers here;
GIF and WebP, which may be animated, are opened lazily by Pillow, which counts
their frames. SVG and HEIC, which Pillow does not read, have small parsers
here: the root element's ``width``/``height`` (or ``viewBox``) for SVG, and the
largest ``ispe`` property box of the ISO media file for HEIC.
"""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import warnings

from PIL import Image, UnidentifiedImageError

from migrator import rules

FORMATS = ("png", "jpeg", "gif", "webp", "svg", "heic")
"""Formats Cloudflare Images stores (reference section 6); not TIFF, not AVIF."""

CONTENT_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/gif",
        "image/webp",
        "image/svg+xml",
        "image/heic",
        "image/heif",
    }
)
"""Content types a ``file`` part may be declared with (reference section 3)."""

_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1"})
_PILLOW_FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp"}
_SVG_ROOT = re.compile(rb"<svg[\s>]", re.IGNORECASE)
_SVG_ATTRIBUTE = re.compile(rb"""\s(width|height|viewBox)\s*=\s*["']([^"']*)["']""")


@dataclasses.dataclass(frozen=True)
class Picture:
    """The format of an image file and its size; ``frames`` above 1 if animated."""

    format: str
    width: int
    height: int
    frames: int = 1


class ImageRejected(Exception):
    """The bytes are not an image Cloudflare would store; ``code`` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def inspect(data: bytes) -> Picture:
    """Identify an image and check it against Cloudflare's limits.

    Raise ``ImageRejected`` with 5413 above 10 MB, 5455 for an unknown format, and
    5400 above 12,000 px on a side or 100 megapixels in all frames. SVG is vector
    art, so only its size in bytes is limited.
    """
    if len(data) > rules.MAX_FILE_BYTES:
        raise ImageRejected(
            5413, f"Image is {len(data)} bytes, larger than the 10 MB limit"
        )
    picture = identify(data)
    if picture.format == "svg":
        return picture

    longest = max(picture.width, picture.height)
    if longest > rules.MAX_SIDE_PX:
        raise ImageRejected(
            5400, f"Image is {longest} px on its longest side, over 12,000 px"
        )
    area = picture.width * picture.height * picture.frames
    if area > rules.MAX_AREA_PX:
        raise ImageRejected(5400, f"Image has {area} pixels, over 100 megapixels")
    return picture


def identify(data: bytes) -> Picture:
    """Return the format and size of an image, or raise ``ImageRejected`` (5455)."""
    head = data[:64]
    if head[4:8] == b"ftyp" and _is_heic(data):
        return _heic(data)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack_from(">II", data, 16)
        return Picture("png", width, height)
    if head.startswith(b"\xff\xd8\xff"):
        return _jpeg(data)
    if head.startswith((b"GIF8", b"RIFF")):
        return _pillow(data)
    if _SVG_ROOT.search(data[:4096]):
        return _svg(data)
    raise ImageRejected(5455, "Unsupported image format")


_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""Start-of-frame markers, which carry the size; C4, C8 and CC are not frames."""


def _jpeg(data: bytes) -> Picture:
    """Walk a JPEG's marker segments to its start-of-frame (ITU T.81, B.2)."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        if marker in _JPEG_FRAMES and position + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, position + 5)
            return Picture("jpeg", width, height)
        position += 2 + length
    raise ImageRejected(5455, "Unsupported image format: JPEG without a frame")


def _pillow(data: bytes) -> Picture:
    try:
        with warnings.catch_warnings():
            # Pillow's decompression-bomb guard is stricter than Cloudflare's
            # 100-megapixel limit; the limit is checked here instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            fmt = _PILLOW_FORMATS.get(image.format or "")
            if fmt is None:
                raise ImageRejected(5455, "Unsupported image format")
            frames = getattr(image, "n_frames", 1) if fmt in ("gif", "webp") else 1
            return Picture(fmt, image.width, image.height, frames)
    except Image.DecompressionBombError as error:
        # Only images over twice Pillow's own limit (some 179 megapixels) get
        # here, so they are over Cloudflare's too.
        raise ImageRejected(5400, "Image has over 100 megapixels") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageRejected(5455, "Unsupported image format") from error


def _svg(data: bytes) -> Picture:
    root = _SVG_ROOT.search(data[:4096])
    assert root is not None
    end = data.find(b">", root.start())
    attributes = dict(_SVG_ATTRIBUTE.findall(data[root.start() : end]))
    width = _svg_length(attributes.get(b"width"))
    height = _svg_length(attributes.get(b"height"))
    view_box = attributes.get(b"viewBox", b"").replace(b",", b" ").split()
    if (width is None or height is None) and len(view_box) == 4:
        width = width if width is not None else _svg_length(view_box[2])
        height = height if height is not None else _svg_length(view_box[3])
    return Picture("svg", width or 0, height or 0)


def _svg_length(value: bytes | None) -> int | None:
    number = re.match(rb"\s*([0-9]*\.?[0-9]+)\s*(px)?\s*$", value or b"")
    return round(float(number.group(1))) if number else None


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """Split an ISO base media (HEIF) byte range into (type, body start, end)."""
    boxes = []
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1 and start + 16 <= end:
            size = struct.unpack_from(">Q", data, start + 8)[0]
            header = 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            break
        boxes.append((kind, start + header, start + size))
        start += size
    return boxes


def _is_heic(data: bytes) -> bool:
    size = struct.unpack_from(">I", data, 0)[0]
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, min(size, 64), 4)]
    return any(brand in _HEIC_BRANDS for brand in brands)


def _descend(data: bytes, path: tuple[bytes, ...]) -> list[tuple[int, int]]:
    """Return the byte ranges of the boxes found by following ``path`` of types."""
    ranges = [(0, len(data))]
    for kind in path:
        ranges = [
            (body, end)
            for start, stop in ranges
            for found, body, end in _boxes(data, start, stop)
            if found == kind
        ]
        if kind == b"meta":
            # meta is a full box: version and flags come before its children.
            ranges = [(start + 4, end) for start, end in ranges]
    return ranges


def _heic(data: bytes) -> Picture:
    """Read the image spatial extents (``ispe``) under meta/iprp/ipco.

    A HEIC's primary image may be a grid of tiles, each with its own ``ispe``;
    the grid's own extent is the largest one, so that is the picture's size.
    """
    extents = [
        struct.unpack_from(">II", data, start + 4)
        for start, end in _descend(data, (b"meta", b"iprp", b"ipco", b"ispe"))
        if end - start >= 12
    ]
    if not extents:
        raise ImageRejected(5455, "Unsupported image format: HEIC without a size")
    width, height = max(extents, key=lambda extent: extent[0] * extent[1])
    return Picture("heic", width, height)
