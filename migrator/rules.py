"""Cloudflare Images' rules for what an upload may carry.

One source of truth for the manifest loader (which rejects a bad row before it
reaches the job table) and for the emulator (which refuses it as Cloudflare would).
Each check returns ``None`` when the value is acceptable, else a short sentence
saying what is wrong, fit to follow ``FILE:LINE: field:``.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_FILE_BYTES = 10 * 1024 * 1024
"""Largest image Cloudflare stores (error 5413 above it)."""
MAX_SIDE_PX = 12_000
"""Longest side of a stored image, in pixels."""
MAX_AREA_PX = 100_000_000
"""Largest area of a stored image: 100 megapixels."""
MAX_METADATA_BYTES = 1024
"""Largest metadata object, measured as compact UTF-8 JSON."""
MAX_CUSTOM_ID_CHARS = 1024
MAX_CREATOR_CHARS = 1024

_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# One encoder, built once: json.dumps builds a new one per call when given options,
# which is most of the cost of checking a million rows' metadata.
_METADATA_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_UUID = re.compile(
    r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}",
    re.IGNORECASE,
)
_UUID_LENGTHS = frozenset(range(32, 37))


def encode_metadata(metadata: dict[str, Any]) -> str:
    """Serialise metadata the way it is sent and measured: compact UTF-8 JSON."""
    return _METADATA_ENCODER.encode(metadata)


def check_custom_id(custom_id: str) -> str | None:
    """Say what is wrong with a custom image ID, if anything."""
    if not custom_id:
        return "must not be empty"
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return f"is {len(custom_id)} characters, more than {MAX_CUSTOM_ID_CHARS}"
    if custom_id.startswith("/") or custom_id.endswith("/"):
        return "must not start or end with '/'"
    # A UUID is 32 hex digits, with up to four dashes between their groups.
    if len(custom_id) in _UUID_LENGTHS and _UUID.fullmatch(custom_id):
        return "must not be a UUID (Cloudflare reserves those for its own IDs)"
    # Printable ASCII has no control characters: most IDs skip the search.
    if not (custom_id.isascii() and custom_id.isprintable()) and (
        _CONTROL_CHARACTER.search(custom_id)
    ):
        return "must not contain control characters"
    return None


def check_metadata(metadata: Any) -> str | None:
    """Say what is wrong with a metadata value, if anything."""
    if not isinstance(metadata, dict):
        return f"must be a JSON object, not {type(metadata).__name__}"
    size = len(encode_metadata(metadata).encode())
    if size > MAX_METADATA_BYTES:
        return f"is {size} bytes of JSON, more than {MAX_METADATA_BYTES}"
    return None


def check_creator(creator: str) -> str | None:
    """Say what is wrong with a creator string, if anything."""
    if len(creator) > MAX_CREATOR_CHARS:
        return f"is {len(creator)} characters, more than {MAX_CREATOR_CHARS}"
    return None


def check_signed_urls(custom_id: str | None, require_signed_urls: bool) -> str | None:
    """Cloudflare refuses signed URLs on an image with a custom ID."""
    if custom_id and require_signed_urls:
        return "cannot be true for an image with a custom ID"
    return None
