"""Checking a migration: its sources before a run, its images after.

Sources: a URL is probed with one ranged GET for its first bytes (through the
client, the only code that speaks HTTP); a local file is read likewise. From those
bytes and the size the origin or the file system reports, a source is judged
against Cloudflare's limits (reference section 6): at most 10 MB, a format it
stores, at most 12,000 px on a side and 100 megapixels. A limit that cannot be
judged from the first bytes (the frames of an animation, a JPEG whose size lies
past them) is left for the upload to find.

Images: each done row is looked up with image details on the batch host, at the
batch rate. An image that is not there is *missing*; one whose metadata,
signed-URL flag or creator is not what the row says *differs*. The
``migrator_key`` field migrator adds to the metadata of images without a custom ID
is its own and is left out of the comparison.
"""

from __future__ import annotations

import collections
import concurrent.futures
import enum
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError

from migrator import rules
from migrator.client import ImageRecord, ImagesClient, sniff_content_type
from migrator.errors import (
    AccountStoppedError,
    AuthError,
    MigratorError,
    NotFoundError,
    SourceError,
)
from migrator.manifest import MIGRATION_KEY_FIELD
from migrator.rules import encode_metadata
from migrator.store.reports import ReportRow

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result")

HEAD_BYTES = 64 * 1024
"""Bytes read from the start of each source: enough for any image header seen."""

STORED_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/svg+xml",
        "image/heic",
    }
)
"""Formats Cloudflare Images stores, as ``sniff_content_type`` names them."""


class Fault(str, enum.Enum):
    """Why a source would fail its upload."""

    UNREACHABLE = "unreachable"
    """No answer, an error status, or a file that cannot be read."""
    TOO_LARGE = "too-large"
    """Over 10 MB (Cloudflare answers 5413)."""
    WRONG_FORMAT = "wrong-format"
    """Not a format Cloudflare stores (5455)."""
    TOO_MANY_PIXELS = "too-many-pixels"
    """Over 12,000 px on a side or 100 megapixels (5400)."""


@dataclass(frozen=True)
class SourceProblem:
    """A source that would fail, and what was found."""

    row: ReportRow
    fault: Fault
    detail: str


def judge(head: bytes, size: int | None) -> tuple[Fault, str] | None:
    """Judge a source from its first bytes and full size; ``None`` if it passes."""
    if size is not None and size > rules.MAX_FILE_BYTES:
        return Fault.TOO_LARGE, f"{size} bytes, over Cloudflare's 10 MB"
    try:
        picture = _identify(head)
    except Image.DecompressionBombError:
        return Fault.TOO_MANY_PIXELS, "more than twice Pillow's safe size in pixels"
    content_type = sniff_content_type(head)
    if content_type not in STORED_TYPES:
        kind = picture[0] if picture else "not an image"
        return Fault.WRONG_FORMAT, f"{kind}, not a format Cloudflare stores"
    if picture is None or content_type == "image/svg+xml":
        return None
    _, width, height = picture
    if max(width, height) > rules.MAX_SIDE_PX:
        return Fault.TOO_MANY_PIXELS, f"{width}x{height} px, over 12,000 px a side"
    if width * height > rules.MAX_AREA_PX:
        return Fault.TOO_MANY_PIXELS, f"{width}x{height} px, over 100 megapixels"
    return None


def check_source(row: ReportRow, client: ImagesClient) -> SourceProblem | None:
    """Probe one row's source; ``None`` when nothing stands against its upload."""
    if row.source_kind == "file":
        head, size, problem = _read_file(row.source)
    else:
        head, size, problem = _fetch(row.source, client)
    if problem is not None:
        return SourceProblem(row, Fault.UNREACHABLE, problem)
    verdict = judge(head, size)
    if verdict is None:
        return None
    return SourceProblem(row, *verdict)


def check_sources(
    rows: Iterable[ReportRow], client: ImagesClient, workers: int
) -> Iterator[tuple[ReportRow, SourceProblem | None]]:
    """Probe every row's source on ``workers`` threads; yield each with a verdict."""
    return in_order(lambda row: check_source(row, client), rows, workers)


class Problem(str, enum.Enum):
    """What verification found wrong with one done row."""

    MISSING = "missing"
    """Cloudflare has no image under the row's ID: it must be uploaded again."""
    DIFFERS = "differs"
    """The image is there with other metadata, flag or creator: it needs an update."""
    UNCHECKED = "unchecked"
    """The lookup failed for a transient reason; nothing is known."""


@dataclass(frozen=True)
class Finding:
    """One done row that is not as it should be in Cloudflare, and why."""

    row: ReportRow
    problem: Problem
    detail: str


def differences(row: ReportRow, image: ImageRecord) -> list[str]:
    """Say how ``image`` differs from what ``row`` uploaded; empty when it matches.

    Metadata compares as JSON values, without ``migrator_key``. The creator is
    compared only when the row has one, since an image uploaded without one may
    carry whatever Cloudflare defaults to.
    """
    found: list[str] = []
    stored = {k: v for k, v in image.meta.items() if k != MIGRATION_KEY_FIELD}
    wanted = row.metadata or {}
    if stored != wanted:
        found.append(
            f"metadata is {encode_metadata(stored)}, not {encode_metadata(wanted)}"
        )
    if image.require_signed_urls != row.require_signed_urls:
        found.append(
            f"requireSignedURLs is {str(image.require_signed_urls).lower()}, "
            f"not {str(row.require_signed_urls).lower()}"
        )
    if row.creator is not None and image.creator != row.creator:
        found.append(f"creator is {image.creator!r}, not {row.creator!r}")
    return found


def check(row: ReportRow, client: ImagesClient) -> Finding | None:
    """Look one done row up in Cloudflare; ``None`` when all is as recorded.

    Raises ``AuthError`` and ``AccountStoppedError``, which no other row could
    escape either; any other failure makes the row *unchecked*.
    """
    if not row.image_id:
        return Finding(row, Problem.MISSING, "no image ID was recorded for this row")
    try:
        image = client.details(row.image_id)
    except NotFoundError:
        return Finding(row, Problem.MISSING, "Cloudflare has no image with this ID")
    except (AuthError, AccountStoppedError):
        raise
    except MigratorError as error:
        logger.warning("image %s: not verified: %s", row.image_id, error)
        return Finding(row, Problem.UNCHECKED, str(error))
    found = differences(row, image)
    if found:
        return Finding(row, Problem.DIFFERS, "; ".join(found))
    return None


def verify(
    rows: Iterable[ReportRow], client: ImagesClient, workers: int
) -> Iterator[tuple[ReportRow, Finding | None]]:
    """Check every done row with ``workers`` threads; yield each with its finding."""
    return in_order(lambda row: check(row, client), rows, workers)


def in_order(
    function: Callable[[ReportRow], _Result],
    rows: Iterable[ReportRow],
    workers: int,
) -> Iterator[tuple[ReportRow, _Result]]:
    """Apply ``function`` to rows on ``workers`` threads; yield rows in order.

    At most twice ``workers`` calls are outstanding, so memory stays flat over
    any number of rows; the client's rate limiter paces the requests.
    """
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="check"
    ) as pool:
        pending: collections.deque[
            tuple[ReportRow, concurrent.futures.Future[_Result]]
        ] = collections.deque()
        try:
            for row in rows:
                pending.append((row, pool.submit(function, row)))
                if len(pending) >= 2 * workers:
                    done_row, future = pending.popleft()
                    yield done_row, future.result()
            while pending:
                done_row, future = pending.popleft()
                yield done_row, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def as_json(finding: Finding) -> dict[str, Any]:
    """A finding as one JSON Lines object."""
    return {
        "problem": finding.problem.value,
        "image_id": finding.row.image_id,
        "source": finding.row.source,
        "detail": finding.detail,
    }


def _fetch(url: str, client: ImagesClient) -> tuple[bytes, int | None, str | None]:
    try:
        peek = client.peek(url, HEAD_BYTES)
    except SourceError as error:
        return b"", None, str(error).removeprefix(f"{url}: ")
    if peek.status >= 400:
        return b"", None, f"the origin answered HTTP {peek.status}"
    return peek.head, peek.size, None


def _read_file(path: str) -> tuple[bytes, int | None, str | None]:
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            return stream.read(HEAD_BYTES), size, None
    except OSError as error:
        return b"", None, f"cannot be read: {error.strerror}"


def _identify(head: bytes) -> tuple[str, int, int] | None:
    """Format, width and height from an image's first bytes, if Pillow knows them.

    Pillow only parses the header here, so its warning about huge images does
    not apply; an image huge enough for Pillow to refuse outright raises
    ``DecompressionBombError``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(head)) as image:
                return image.format or "unknown", image.width, image.height
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
