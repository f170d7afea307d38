"""Reading what a client sends: upload forms, update bodies, list queries.

Each reader turns raw fields into typed values or raises ``ApiError`` with the
code Cloudflare answers, reusing ``migrator.rules`` so that the emulator refuses
exactly what the manifest loader refuses.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.requests import Request

from migrator import rules
from migrator.emulator.envelope import ApiError, bad_request, too_large
from migrator.emulator.state import MetaFilter

MAX_FILTERS = 5
"""List v2 takes at most five metadata filters (reference section 4)."""
_META_QUERY = re.compile(
    r"meta\.(?P<path>[^\[\]]+)"
    r"(?:\[(?P<operator>eq|in|gt|gte|lt|lte)(?::(?P<kind>string|number|boolean))?\])?"
)
_NUMERIC_ONLY = frozenset({"gt", "gte", "lt", "lte"})
_PARAMETER = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_MAX_FIELDS = 64
_MAX_BODY_BYTES = rules.MAX_FILE_BYTES + 64 * 1024
"""Largest form read: a 10 MB file and room for the other fields."""
_PER_PAGE = (10, 10_000)
"""Bounds of ``per_page`` in the OpenAPI schema of list v2."""


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """The fields an upload or a direct upload sets on a new image."""

    custom_id: str | None
    metadata: dict[str, Any]
    require_signed_urls: bool
    creator: str | None


@dataclasses.dataclass(frozen=True)
class ListQuery:
    """A list v2 request: ``after`` is the position a continuation token holds."""

    descending: bool
    after: int | None
    per_page: int
    creator: str | None
    filters: list[MetaFilter]


@dataclasses.dataclass(frozen=True)
class FilePart:
    """A part of a form sent with a file name: the bytes of a file."""

    filename: str
    content_type: str
    data: bytes


Form = dict[str, "str | FilePart"]
"""A multipart form: each field's first value, text or file."""


async def read_form(request: Request) -> Form:
    """Parse a multipart body; anything else is refused with 5415 (HTTP 415).

    The body is read whole (an upload is at most 10 MB; a larger one is refused
    with 5413 as soon as it is), then split at its boundaries: much faster than a
    streaming parser for the small forms of upload-by-URL.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, 5415, "Images must be uploaded as a form, not as raw bytes")
    boundary = _parameters(content_type).get("boundary")
    if not boundary:
        raise bad_request("the multipart content type has no boundary")

    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    return parse_form(b"".join(chunks), boundary.encode("latin-1"))


def parse_form(body: bytes, boundary: bytes) -> Form:
    """Split a multipart/form-data body (RFC 7578) into its fields."""
    # Every delimiter but a leading one follows a CRLF that belongs to it.
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary)
    if len(pieces) < 2 or not pieces[-1].startswith(b"--"):
        raise bad_request("the multipart body is not closed by its boundary")

    form: Form = {}
    for piece in pieces[1:-1]:
        _, newline, part = piece.partition(b"\r\n")
        head, blank, content = part.partition(b"\r\n\r\n")
        if not newline or not blank:
            raise bad_request("a part of the multipart body has no headers")
        headers = _part_headers(head.decode("utf-8", "replace"))
        disposition = _parameters(headers.get("content-disposition", ""))
        name = disposition.get("name")
        if name is None:
            raise bad_request("a part of the multipart body has no name")
        if len(form) >= _MAX_FIELDS:
            raise bad_request(f"a form may have at most {_MAX_FIELDS} fields")
        if "filename" in disposition:
            kind = headers.get("content-type", "")
            value: str | FilePart = FilePart(disposition["filename"], kind, content)
        else:
            value = content.decode("utf-8", "replace")
        form.setdefault(name, value)
    return form


def _part_headers(head: str) -> dict[str, str]:
    headers = {}
    for line in head.split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _parameters(header: str) -> dict[str, str]:
    """Read the ``name=value`` parameters after a header's first ``;``."""
    found = {}
    for match in _PARAMETER.finditer(header):
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        else:
            value = value.strip()
        found[match.group(1).lower()] = value
    return found


def text_field(form: Form, name: str) -> str | None:
    """Return a text field, refusing a file part where text is expected."""
    value = form.get(name)
    if value is None or isinstance(value, str):
        return value
    raise bad_request(f"field {name} must be text, not a file")


def file_field(form: Form, name: str = "file") -> FilePart | None:
    """Return a file part, refusing text where a file is expected."""
    value = form.get(name)
    if value is None or isinstance(value, FilePart):
        return value
    raise bad_request(f"field {name} must be a file part, not text")


def read_options(form: Form) -> ImageOptions:
    """Read and check ``id``, ``metadata``, ``requireSignedURLs`` and ``creator``."""
    custom_id = text_field(form, "id") or None
    metadata = _metadata(text_field(form, "metadata"))
    signed = _boolean("requireSignedURLs", text_field(form, "requireSignedURLs"))
    creator = text_field(form, "creator")
    return _checked(custom_id, metadata, bool(signed), creator)


def _checked(
    custom_id: str | None,
    metadata: dict[str, Any],
    signed: bool,
    creator: str | None,
) -> ImageOptions:
    problems = [
        ("id", rules.check_custom_id(custom_id) if custom_id is not None else None),
        ("metadata", rules.check_metadata(metadata)),
        ("creator", rules.check_creator(creator) if creator is not None else None),
        ("requireSignedURLs", rules.check_signed_urls(custom_id, signed)),
    ]
    for field, problem in problems:
        if problem:
            raise bad_request(f"{field} {problem}")
    return ImageOptions(custom_id, metadata, signed, creator)


def _metadata(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise bad_request("metadata must be a JSON object") from error
    if not isinstance(value, dict):
        raise bad_request("metadata must be a JSON object")
    return value


def _boolean(name: str, text: str | None) -> bool | None:
    if text is None or text == "":
        return None
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise bad_request(f"{name} must be true or false, not {text!r}")
    return lowered == "true"


def read_changes(body: bytes, custom_id: str | None) -> dict[str, Any]:
    """Read an update's JSON body into the fields it changes.

    ``custom_id`` is the image's ID if it is a custom one, which may not be
    combined with signed URLs.
    """
    try:
        value = json.loads(body or b"{}")
    except ValueError as error:
        raise bad_request("the update body must be a JSON object") from error
    if not isinstance(value, dict):
        raise bad_request("the update body must be a JSON object")

    changes: dict[str, Any] = {}
    if "metadata" in value:
        problem = rules.check_metadata(value["metadata"])
        if problem:
            raise bad_request(f"metadata {problem}")
        changes["meta"] = value["metadata"]
    if "requireSignedURLs" in value:
        signed = value["requireSignedURLs"]
        if not isinstance(signed, bool):
            raise bad_request("requireSignedURLs must be true or false")
        problem = rules.check_signed_urls(custom_id, signed)
        if problem:
            raise bad_request(f"requireSignedURLs {problem}")
        changes["require_signed_urls"] = signed
    if "creator" in value:
        creator = value["creator"]
        if creator is not None and not isinstance(creator, str):
            raise bad_request("creator must be a string")
        problem = rules.check_creator(creator) if creator else None
        if problem:
            raise bad_request(f"creator {problem}")
        changes["creator"] = creator
    return changes


def read_expiry(text: str | None, now: float) -> float:
    """Read a direct upload's ``expiry``: default in 30 minutes, 2 min to 6 h ahead."""
    if not text:
        return now + 30 * 60
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise bad_request(f"expiry {text!r} is not an RFC 3339 time") from error
    if moment.tzinfo is None:
        raise bad_request(f"expiry {text!r} has no time zone")
    expiry = moment.timestamp()
    if not now + 120 <= expiry <= now + 6 * 3600:
        raise bad_request("expiry must be between 2 minutes and 6 hours from now")
    return expiry


def read_list_query(query: Mapping[str, str]) -> ListQuery:
    """Read list v2's query: order, page size, continuation, creator, filters."""
    order = query.get("sort_order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(f"sort_order must be asc or desc, not {order!r}")
    per_page = read_per_page(query.get("per_page"))
    after = decode_continuation(query.get("continuation_token"), order)

    filters = []
    for name, value in query.items():
        if not name.startswith("meta."):
            continue
        found = _META_QUERY.fullmatch(name)
        if found is None:
            raise bad_request(f"metadata filter {name!r} is not meta.<field>[<op>]")
        operator, kind = found.group("operator") or "eq", found.group("kind")
        if operator in _NUMERIC_ONLY and kind not in (None, "number"):
            raise bad_request(f"metadata filter {name!r} compares numbers only")
        path = tuple(found.group("path").split("."))
        filters.append(MetaFilter(path, operator, kind, value))
    if len(filters) > MAX_FILTERS:
        raise bad_request(f"at most {MAX_FILTERS} metadata filters are allowed")
    return ListQuery(order == "desc", after, per_page, query.get("creator"), filters)


def read_per_page(text: str | None) -> int:
    """Read ``per_page``: 1000 by default, 10 to 10,000 as the schema allows."""
    if text is None:
        return 1000
    try:
        number = int(text)
    except ValueError as error:
        raise bad_request(f"per_page {text!r} is not a number") from error
    low, high = _PER_PAGE
    if not low <= number <= high:
        raise bad_request(f"per_page must be between {low} and {high}")
    return number


def encode_continuation(position: int | None, order: str) -> str | None:
    """Make the opaque continuation token for a list position, or None at the end."""
    if position is None:
        return None
    raw = f"{order[0]}{position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continuation(token: str | None, order: str) -> int | None:
    """Read a continuation token back; one made for the other order is refused."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if raw[:1] != order[0]:
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise bad_request("continuation_token is not valid for this query") from error
