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

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from migrator import rules
from migrator.emulator.envelope import ApiError, bad_request
from migrator.emulator.state import MetaFilter

MAX_FILTERS = 5
"""List v2 takes at most five metadata filters (reference section 4)."""
_META_QUERY = re.compile(
    r"meta\.(?P<path>[^\[\]]+)"
    r"(?:\[(?P<operator>eq|in|gt|gte|lt|lte)(?::(?P<kind>string|number|boolean))?\])?"
)
_NUMERIC_ONLY = frozenset({"gt", "gte", "lt", "lte"})
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


async def read_form(request: Request) -> FormData:
    """Parse a multipart body; anything else is refused with 5415 (HTTP 415)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, 5415, "Images must be uploaded as a form, not as raw bytes")
    try:
        return await request.form(max_files=4, max_fields=64)
    except MultiPartException as error:
        raise bad_request(f"the multipart body cannot be parsed: {error}") from error


def text_field(form: FormData, name: str) -> str | None:
    """Return a text field, refusing a file part where text is expected."""
    value = form.get(name)
    if value is None or isinstance(value, str):
        return value
    raise bad_request(f"field {name} must be text, not a file")


def file_field(form: FormData, name: str = "file") -> UploadFile | None:
    """Return a file part, refusing text where a file is expected."""
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return value
    raise bad_request(f"field {name} must be a file part, not text")


def read_options(form: FormData) -> ImageOptions:
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
    per_page = _per_page(query.get("per_page"))
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


def _per_page(text: str | None) -> int:
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
