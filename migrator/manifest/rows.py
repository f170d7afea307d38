"""What a manifest row is, and Cloudflare's rules every row is checked against.

A row becomes a ``ManifestRow`` only when Cloudflare would accept its upload: an
absolute http(s) URL or a readable local file of a size Cloudflare stores, a valid
custom ID, metadata that fits 1024 bytes (with the ``migrator_key`` field a row
without a custom ID carries), and no signed URLs beside a custom ID. Anything else
becomes a ``RowError`` naming the field and what is wrong with it.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote

from migrator.rules import (
    MAX_FILE_BYTES,
    MAX_METADATA_BYTES,
    check_creator,
    check_custom_id,
    check_metadata,
    check_signed_urls,
    encode_metadata,
)

MAX_PLAIN_KEY_CHARS = 600
"""Longest ID or source kept as it is in a row's key: at 4 bytes a character at
most, well under PostgreSQL's index limit."""

MIGRATION_KEY_FIELD = "migrator_key"
"""Metadata field that lets a run find its own upload of a row without a custom ID."""

# The field as it appears in compact JSON: ``"migrator_key":"<32 hex digits>"``.
_MIGRATION_KEY_BYTES = len(encode_metadata({MIGRATION_KEY_FIELD: "0" * 32})) - 2

# Anything below a space, and DEL, is never part of a URL, an ID or a path that a
# user meant to write.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""The start of anything written as a URL, http or not."""

# An absolute http(s) URL as urllib would split it, checked in one pass (the loader
# sees millions): spaces and control characters are refused anywhere in it, and
# userinfo runs to the last "@" before the path. The common case, no userinfo,
# has a pattern of its own that matches without backtracking. The scheme is
# spelt out in both cases rather than matched ignoring case, and the host's and
# path's characters are named as ranges (printable ASCII but the delimiters,
# then all beyond ASCII) rather than as what they are not: re matches those
# faster.
_HTTP_SCHEME = r"(?P<scheme>[hH][tT][tT][pP][sS]?)://"
_URL_HOST_PORT_PATH = (
    r'(?P<host>\[[^\]/?#\x00-\x20\x7f]*\]|[!"$-.0-9;->A-Z\\^-~\x80-\U0010ffff]+)'
    r"(?::(?P<port>[0-9]*))?"
    r"(?P<path>[/?#][!-~\x80-\U0010ffff]*)?"
)
_HTTP_URL = re.compile(_HTTP_SCHEME + _URL_HOST_PORT_PATH)
_HTTP_URL_WITH_USERINFO = re.compile(
    _HTTP_SCHEME + r"[^/?#\x00-\x20\x7f]*@" + _URL_HOST_PORT_PATH
)
_BLANK_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")

# Metadata as exports usually write it: a compact JSON object whose values are
# strings without escapes, integers, booleans or null. Such text is valid JSON
# and at least as long as the compact encoding of what it parses to (a repeated
# key or a "-0" only shortens it), so it is checked without being parsed.
# String characters are named as ranges (space, "!", "#" to "[", "]" onwards),
# which re matches faster than a negated class.
_JSON_PLAIN_STRING = r'"[ !#-\[\]-\U0010ffff]*"'
_JSON_PLAIN_MEMBER = (
    _JSON_PLAIN_STRING
    + r":(?:"
    + _JSON_PLAIN_STRING
    + r"|-?(?:0|[1-9][0-9]*)|true|false|null)"
)
_JSON_PLAIN_OBJECT = re.compile(
    r"\{(?:" + _JSON_PLAIN_MEMBER + r"(?:," + _JSON_PLAIN_MEMBER + r")*)?\}"
)
# In such text a key is the only place a quote can be followed by a name.
_PLAIN_MIGRATION_KEY = f'"{MIGRATION_KEY_FIELD}":'


class IdFrom(str, enum.Enum):
    """Where a row without an ``id`` gets its custom ID from."""

    PATH = "path"
    """The URL's path, or the file's path relative to the manifest's directory."""


class ManifestRow(NamedTuple):
    """One valid image from a manifest, in the form the job table stores it.

    ``key`` is the row's identity across reloads, made by ``row_key``.
    ``metadata_json`` is the user's metadata object as JSON text, and
    ``content_hash`` changes whenever anything Cloudflare stores for the image
    does. A tuple, in the job table's column order, because a load makes
    millions of them.
    """

    key: str
    source: str
    source_kind: str
    """``url``, or ``file`` when ``source`` is an absolute local path."""
    custom_id: str | None
    metadata_json: str | None
    require_signed_urls: bool
    creator: str | None
    manifest: str
    line: int
    content_hash: str

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The metadata object, parsed."""
        if self.metadata_json is None:
            return None
        parsed: dict[str, Any] = json.loads(self.metadata_json)
        return parsed


# Makes a ManifestRow from a tuple of its fields without the Python-level
# __new__ a NamedTuple has: a quarter of a microsecond, a million times a load.
_new_row: Callable[[tuple[Any, ...]], ManifestRow] = functools.partial(
    tuple.__new__, ManifestRow
)


@dataclass(frozen=True, slots=True)
class RowError:
    """A manifest line that was skipped, and why."""

    manifest: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.manifest}:{self.line}: {self.field}: {self.message}"


class _Uploadable(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def custom_id(self) -> str | None: ...

    @property
    def metadata(self) -> dict[str, Any] | None: ...


def row_key(custom_id: str | None, source: str) -> str:
    """A row's identity: ``id:<custom id>`` when it has one, else ``source:<source>``.

    A key longer than ``MAX_PLAIN_KEY_CHARS`` becomes ``id#<sha256>`` or
    ``source#<sha256>`` of the same text: PostgreSQL cannot index a value of
    more than about 2700 bytes, and a URL or a non-ASCII ID can be longer.
    """
    kind, value = ("id", custom_id) if custom_id else ("source", source)
    if len(value) <= MAX_PLAIN_KEY_CHARS:
        return f"{kind}:{value}"
    return f"{kind}#{hashlib.sha256(value.encode()).hexdigest()}"


def migration_key(key: str) -> str:
    """The ``migrator_key`` metadata value for a row: its key's hash, 32 hex digits."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def upload_metadata(row: _Uploadable) -> dict[str, Any] | None:
    """The metadata object to send with a row's upload, ``None`` for none.

    A row without a custom ID gets Cloudflare's assigned ID, which a run cannot
    know in advance; it carries ``migrator_key`` so that a run interrupted
    mid-upload can find the image again with a list v2 metadata filter. The
    loader keeps room for that field within Cloudflare's 1024 bytes.
    """
    if row.custom_id:
        return None if row.metadata is None else dict(row.metadata)
    return {**(row.metadata or {}), MIGRATION_KEY_FIELD: migration_key(row.key)}


class RowBuilder:
    """Checks one manifest's values against Cloudflare's rules and makes rows."""

    def __init__(self, name: str, base_dir: str, id_from: IdFrom | None) -> None:
        self.name = name
        self.base_dir = base_dir
        self.id_from = id_from

    def error(self, line: int, field: str, message: str) -> RowError:
        return RowError(self.name, line, field, message)

    def build(
        self,
        line: int,
        url: str | None,
        file: str | None,
        custom_id: str | None,
        metadata: Any,
        require_signed_urls: bool,
        creator: str | None,
        metadata_text: str | None = None,
    ) -> ManifestRow | RowError:
        """Check every value of a row; return the row or its first problem.

        ``metadata`` is the parsed object; ``metadata_text``, when given, is the
        JSON it was parsed from, kept as written. Text that ``is_plain_object``
        need not be parsed: ``metadata`` may then be ``None``.
        """
        if url is not None and file is not None:
            return self.error(line, "row", "has both a url and a file; give one")
        if url is not None:
            source, problem = _check_url(url)
            field, kind = "url", "url"
        elif file is not None:
            source, problem = self._check_file(file)
            field, kind = "file", "file"
        else:
            return self.error(line, "url", "is missing: each row needs a url or a file")
        if problem:
            return self.error(line, field, problem)

        if custom_id is not None:
            problem = check_custom_id(custom_id)
        elif self.id_from is IdFrom.PATH:
            custom_id, problem = self._derive_id(kind, source)
        if problem:
            return self.error(line, "id", problem)

        metadata_json = None
        if metadata is not None or metadata_text is not None:
            metadata_json, problem = _check_metadata(
                metadata, metadata_text, custom_id is not None
            )
            if problem:
                return self.error(line, "metadata", problem)

        if require_signed_urls:
            problem = check_signed_urls(custom_id, require_signed_urls)
            if problem:
                return self.error(line, "requireSignedURLs", problem)
        if creator is not None:
            problem = check_creator(creator) or _check_text(creator)
            if problem:
                return self.error(line, "creator", problem)

        return _new_row(
            (
                row_key(custom_id, source),
                source,
                kind,
                custom_id,
                metadata_json,
                require_signed_urls,
                creator,
                self.name,
                line,
                _content_hash(
                    source, custom_id, metadata_json, require_signed_urls, creator
                ),
            )
        )

    def _check_file(self, entry: str) -> tuple[str, str | None]:
        """Resolve a local path and check it names a readable image-sized file."""
        if _CONTROL.search(entry):
            return entry, "must not contain control characters"
        path = os.path.normpath(os.path.join(self.base_dir, entry))
        if _check_text(path):
            return path, f"{shorten(path)!r} is not a valid UTF-8 path"
        try:
            found = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return path, f"{shorten(path)!r} does not exist"
        except OSError as error:
            return path, f"{shorten(path)!r} cannot be read: {error.strerror}"

        if not stat.S_ISREG(found.st_mode):
            return path, f"{shorten(path)!r} is not a regular file"
        if not os.access(path, os.R_OK):
            return path, f"{shorten(path)!r} cannot be read: permission denied"
        if found.st_size == 0:
            return path, f"{shorten(path)!r} is empty"
        if found.st_size > MAX_FILE_BYTES:
            return path, (
                f"{shorten(path)!r} is {found.st_size} bytes, more than the "
                f"{MAX_FILE_BYTES} Cloudflare stores"
            )
        return path, None

    def _derive_id(self, kind: str, source: str) -> tuple[str | None, str | None]:
        """Make a custom ID from a source's path, for ``--id-from path``."""
        if kind == "url":
            match = _match_url(source)
            path = re.split("[?#]", (match and match["path"]) or "", maxsplit=1)[0]
            try:
                derived = unquote(path.removeprefix("/"), errors="strict")
            except UnicodeDecodeError:
                return None, "cannot come from the URL's path: it decodes to non-UTF-8"
        else:
            derived = os.path.relpath(source, self.base_dir).replace(os.sep, "/")
            if derived == ".." or derived.startswith("../"):
                return None, (
                    "cannot come from the file's path: it is outside the "
                    f"manifest's directory {shorten(self.base_dir)!r}"
                )

        problem = check_custom_id(derived)
        if problem:
            where = "URL's path" if kind == "url" else "file's path"
            return None, f"{shorten(derived)!r}, from the {where}, {problem}"
        return derived, None


def _match_url(url: str) -> re.Match[str] | None:
    """Split an absolute http(s) URL into scheme, host, port and path, if it is one."""
    match = _HTTP_URL.fullmatch(url)
    if match is None and "@" in url:
        match = _HTTP_URL_WITH_USERINFO.fullmatch(url)
    return match


def _check_url(url: str) -> tuple[str, str | None]:
    """Check an image URL is one Cloudflare can fetch: absolute http or https."""
    match = _match_url(url)
    if match is not None:
        port = match["port"]
        if port and int(port) > 65535:
            return url, f"has port {int(port)}, more than 65535"
        return url, None

    if _BLANK_OR_CONTROL.search(url):
        return url, "must not contain spaces or control characters; percent-encode them"
    scheme = URL_SCHEME.match(url)
    if scheme and scheme[0][:-3].lower() not in ("http", "https"):
        return url, f"must be an http or https URL, not {scheme[0][:-3]!r}"
    return url, f"{shorten(url)!r} is not an absolute http or https URL"


def _check_metadata(
    metadata: Any, text: str | None, has_custom_id: bool
) -> tuple[str | None, str | None]:
    """Check metadata fits Cloudflare's limit, beside ``migrator_key`` if added.

    Returns the JSON text to store: ``text`` as written when given, else the
    compact encoding. The size that counts is that of the compact encoding of
    what is sent (``upload_metadata``).
    """
    if metadata is None and text is not None:
        return _check_plain_metadata(text, has_custom_id)
    if not isinstance(metadata, dict):
        return None, check_metadata(metadata)
    if MIGRATION_KEY_FIELD in metadata:
        return None, f"must not have a {MIGRATION_KEY_FIELD!r} field: migrator sets it"
    added = 0 if has_custom_id else _MIGRATION_KEY_BYTES + (1 if metadata else 0)
    if text is not None and _surely_fits(text, MAX_METADATA_BYTES - added):
        return text, None

    try:
        encoded = encode_metadata(metadata)
        size = len(encoded.encode())
    except UnicodeEncodeError:
        return None, "holds a \\u escape that is not valid UTF-8"
    if size + added > MAX_METADATA_BYTES:
        if has_custom_id:
            return None, f"is {size} bytes of JSON, more than {MAX_METADATA_BYTES}"
        return None, (
            f"is {size} bytes of JSON; with the {MIGRATION_KEY_FIELD!r} field a row "
            f"without an id carries it would be {size + added}, more than "
            f"{MAX_METADATA_BYTES}"
        )
    return encoded if text is None else text, None


def is_plain_object(text: str) -> bool:
    """Whether JSON text is a compact object of plain values, which needs no parsing.

    Plain values are strings without escapes, integers, booleans and null.
    """
    return _JSON_PLAIN_OBJECT.fullmatch(text) is not None


def _check_plain_metadata(
    text: str, has_custom_id: bool
) -> tuple[str | None, str | None]:
    """Check metadata written as a plain object, as ``_check_metadata`` would."""
    if _PLAIN_MIGRATION_KEY in text:
        return None, f"must not have a {MIGRATION_KEY_FIELD!r} field: migrator sets it"
    added = 0 if has_custom_id else _MIGRATION_KEY_BYTES + (text != "{}")
    if _surely_fits(text, MAX_METADATA_BYTES - added):
        return text, None
    return _check_metadata(parse_json(text), text, has_custom_id)


def _surely_fits(text: str, limit: int) -> bool:
    """Whether JSON text is sure to encode compactly in ``limit`` bytes, unencoded.

    Compact encoding drops whitespace and never lengthens a string without
    escapes, nor an integer, true, false or null. Only a number with a fraction
    or an exponent can grow (``1e5`` becomes ``100000.0``): by at most 21
    characters, the longest float Python writes being 24 and the shortest JSON
    one 3. Each such number holds a ".", "e" or "E", so counting those bounds the
    growth. Text with escapes is always encoded: an escape may hide a lone
    surrogate, which is not UTF-8.
    """
    if "\\" in text:
        return False
    # Each character is at most 4 bytes of UTF-8, or part of a number of at least
    # 3 characters that grows by at most 21: 8 bytes a character covers both.
    if len(text) * 8 <= limit:
        return True
    size = len(text) if text.isascii() else len(text.encode())
    floats = text.count(".") + text.count("e") + text.count("E")
    return size + 21 * floats <= limit


def _check_text(value: str) -> str | None:
    """Say why a string cannot be stored, if it cannot: NUL, or not UTF-8."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


# Copying a hash object costs less than making one with its options anew.
_EMPTY_CONTENT_HASH = hashlib.blake2b(digest_size=16)


def _content_hash(
    source: str,
    custom_id: str | None,
    metadata_json: str | None,
    require_signed_urls: bool,
    creator: str | None,
) -> str:
    # Unit separators cannot be mistaken for content: sources and IDs hold no
    # control characters, JSON escapes them, and the creator comes last.
    signed = "1" if require_signed_urls else "0"
    content = (
        f"{source}\x1f{custom_id or ''}\x1f{metadata_json or ''}\x1f{signed}"
        f"\x1f{creator or ''}"
    )
    hasher = _EMPTY_CONTENT_HASH.copy()
    hasher.update(content.encode())
    return hasher.hexdigest()


@dataclass(frozen=True, slots=True)
class JsonProblem:
    message: str


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, but they are not JSON and Cloudflare
    # refuses them.
    raise ValueError(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    # "1e999" reads as infinity, which no JSON encoder may write back.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is too large for a JSON number")
    return value


# Built once: json.loads with options builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def parse_json(text: str) -> Any:
    """Parse JSON text without surrounding whitespace, or say what is wrong."""
    try:
        # raw_decode skips decode's whitespace handling, a third of its cost.
        value, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    except RecursionError:
        return JsonProblem("is nested too deeply")
    except ValueError as error:
        return JsonProblem(f"is not valid JSON: {error}")
    return value


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def shorten(text: str, limit: int = 80) -> str:
    """Cut a value for a message: a bad row may hold kilobytes of junk."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
