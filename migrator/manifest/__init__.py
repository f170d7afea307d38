"""Manifests: the lists of images a user asks migrator to move.

A manifest is plain text (one URL or file path a line), CSV with a header, or JSON
Lines, any of them gzip-compressed, read from a file or from stdin. Reading yields,
for each line, either a ``ManifestRow`` that Cloudflare would accept or a
``RowError`` that reads ``FILE:LINE: field: what is wrong``; it never raises on bad
content. ``formats`` reads, ``rows`` checks.
"""

from __future__ import annotations

from migrator.manifest.formats import (
    MAX_LINE_BYTES,
    STDIN,
    Format,
    detect_format,
    manifest_rows,
    read_manifest,
)
from migrator.manifest.rows import (
    MIGRATION_KEY_FIELD,
    IdFrom,
    ManifestRow,
    RowError,
    migration_key,
    row_key,
    upload_metadata,
)

__all__ = [
    "MAX_LINE_BYTES",
    "MIGRATION_KEY_FIELD",
    "STDIN",
    "Format",
    "IdFrom",
    "ManifestRow",
    "RowError",
    "detect_format",
    "manifest_rows",
    "migration_key",
    "read_manifest",
    "row_key",
    "upload_metadata",
]
