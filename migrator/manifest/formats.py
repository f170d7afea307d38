"""Reading manifests: text, CSV and JSON Lines, plain or gzip, file or stdin.

Reading streams a line at a time, at most ``MAX_LINE_BYTES`` each, and never
raises on bad content: every line becomes a ``ManifestRow`` or a ``RowError``.
Only a manifest that cannot be opened at all raises ``ManifestError``.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import gzip
import io
import json
import logging
import os
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from migrator.errors import ManifestError
from migrator.manifest.rows import (
    URL_SCHEME,
    IdFrom,
    JsonProblem,
    ManifestRow,
    RowBuilder,
    RowError,
    is_plain_object,
    json_type,
    parse_json,
    shorten,
)

logger = logging.getLogger(__name__)

STDIN = "-"
"""The manifest name that reads standard input."""

MAX_LINE_BYTES = 64 * 1024
"""Longest manifest line read; a longer one is reported and skipped, not buffered."""

_BOOLEANS = {
    "": False,
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
}


class Format(str, enum.Enum):
    """How a manifest is written."""

    TEXT = "text"
    """One URL or file path a line; blank lines and ``#`` comments skipped."""
    CSV = "csv"
    """A header row naming the columns, then one image a row."""
    JSONL = "jsonl"
    """One JSON object a line, with the same keys as the CSV columns."""


_EXTENSIONS = {
    ".txt": Format.TEXT,
    ".text": Format.TEXT,
    ".lst": Format.TEXT,
    ".csv": Format.CSV,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
}

# Column (and JSON key) names, compared without regard to case.
_COLUMNS = ("url", "file", "id", "metadata", "requireSignedURLs", "creator")
_COLUMN_BY_FOLDED = {name.casefold(): name for name in _COLUMNS}


def detect_format(path: str) -> Format:
    """Tell a manifest's format from its name, ignoring a ``.gz`` suffix.

    Standard input is read as text unless ``--format`` says otherwise.
    """
    if path == STDIN:
        return Format.TEXT
    name = path.lower().removesuffix(".gz")
    for extension, found in _EXTENSIONS.items():
        if name.endswith(extension):
            return found
    known = ", ".join(sorted(_EXTENSIONS))
    raise ManifestError(
        f"cannot tell the format of manifest {path} from its name; "
        f"name it with one of {known} (optionally .gz) or pass --format"
    )


def read_manifest(
    path: str,
    *,
    format: Format | None = None,
    id_from: IdFrom | None = None,
    stdin: IO[bytes] | None = None,
) -> Iterator[ManifestRow | RowError]:
    """Yield every row of a manifest, valid or not, in file order.

    ``path`` is a file (gzip is recognised by its content) or ``-`` for ``stdin``
    (by default the process's). Relative file paths inside the manifest are
    resolved against the manifest's directory (the working directory for
    stdin). Raises ``ManifestError`` only when the manifest cannot be opened.
    """
    found = format or detect_format(path)
    name = "<stdin>" if path == STDIN else _printable(path)
    base_dir = os.getcwd() if path == STDIN else os.path.dirname(os.path.abspath(path))
    rows = RowBuilder(name, base_dir, id_from)

    with contextlib.ExitStack() as closing:
        lines = _Lines(_open(path, stdin, closing), name)
        if found is Format.CSV:
            yield from _read_csv(lines, rows)
        elif found is Format.JSONL:
            yield from _read_jsonl(lines, rows)
        else:
            yield from _read_text(lines, rows)


def _open(
    path: str, stdin: IO[bytes] | None, closing: contextlib.ExitStack
) -> io.BufferedIOBase:
    """Open a manifest for reading bytes, decompressing gzip when it starts so.

    Files opened here are closed by ``closing``; stdin is left open.
    """
    raw: Any
    if path == STDIN:
        raw = stdin if stdin is not None else sys.stdin.buffer
    else:
        try:
            raw = closing.enter_context(open(path, "rb"))  # noqa: SIM115
        except OSError as error:
            raise ManifestError(
                f"cannot open manifest {path}: {error.strerror or error}"
            ) from error
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    try:
        magic = buffered.peek(2)[:2]
    except OSError as error:
        raise ManifestError(f"cannot read manifest {path}: {error}") from error
    if magic == b"\x1f\x8b":
        return closing.enter_context(gzip.GzipFile(fileobj=buffered, mode="rb"))
    return buffered


# What a stream can raise mid-read: I/O errors, and a gzip member that is corrupt
# (BadGzipFile is an OSError, zlib.error is not) or cut short (EOFError).
_READ_ERRORS = (OSError, EOFError, zlib.error)


class _Lines:
    """A manifest's lines, decoded, each at most ``MAX_LINE_BYTES`` long.

    Iterating yields text lines with their line ending. A line that cannot be
    used (too long, not UTF-8) is yielded as an empty line, with its ``RowError``
    waiting in ``errors`` for the reader to report; a CSV record that spans it is
    then dropped whole. ``number`` is the number of the last line yielded.
    """

    def __init__(self, stream: io.BufferedIOBase, name: str) -> None:
        self.stream = stream
        self.name = name
        self.number = 0
        self.errors: list[RowError] = []

    def __iter__(self) -> Iterator[str]:
        readline = self.stream.readline
        limit = MAX_LINE_BYTES + 2  # room for the CR LF after a longest line
        while raw := readline(limit):
            self.number += 1
            if len(raw) == limit and not raw.endswith(b"\n"):
                self._skip_rest_of_line()
                self.fail("line", f"is longer than {MAX_LINE_BYTES} bytes")
                yield "\n"
                continue
            try:
                text = raw.decode()
            except UnicodeDecodeError as error:
                column = error.start + 1
                self.fail(
                    "line", f"is not UTF-8: byte {column} is {raw[error.start]:#04x}"
                )
                yield "\n"
                continue
            if self.number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield text

    def fail(self, field: str, message: str) -> None:
        """Record an error on the current line."""
        self.errors.append(RowError(self.name, self.number, field, message))

    def take_errors(self) -> list[RowError]:
        """Hand over the errors recorded since the last call."""
        taken, self.errors = self.errors, []
        return taken

    def broken(self, error: BaseException) -> RowError:
        """The error that ends a manifest which cannot be read any further."""
        return RowError(
            self.name,
            self.number + 1,
            "file",
            f"cannot be read past line {self.number}: {error}",
        )

    def _skip_rest_of_line(self) -> None:
        # Read on in bounded pieces: a "line" may be gigabytes of binary junk.
        while (piece := self.stream.readline(MAX_LINE_BYTES)) and not piece.endswith(
            b"\n"
        ):
            pass


def _read_text(lines: _Lines, rows: RowBuilder) -> Iterator[ManifestRow | RowError]:
    try:
        for text in lines:
            if lines.errors:
                yield from lines.take_errors()
                continue
            entry = text.strip()
            if not entry or entry.startswith("#"):
                continue
            if URL_SCHEME.match(entry):
                yield rows.build(lines.number, entry, None, None, None, False, None)
            else:
                yield rows.build(lines.number, None, entry, None, None, False, None)
    except _READ_ERRORS as error:
        yield lines.broken(error)


def _read_csv(lines: _Lines, rows: RowBuilder) -> Iterator[ManifestRow | RowError]:
    reader = csv.reader(lines, strict=True)
    columns: _CsvColumns | None = None
    while True:
        start = lines.number + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            skipped = (
                f"lines {start}-{lines.number}" if lines.number > start else "it was"
            )
            yield rows.error(
                start,
                "row",
                f"is not valid CSV ({error}); check its quotes ({skipped} skipped)",
            )
            yield from lines.take_errors()
            continue
        except _READ_ERRORS as error:
            yield lines.broken(error)
            return

        if lines.errors:
            yield from lines.take_errors()
        elif not record or (len(record) == 1 and not record[0].strip()):
            continue
        elif columns is None:
            header = _CsvColumns.from_header(record, rows.name, start)
            if isinstance(header, RowError):
                yield header
                return
            columns = header
        else:
            yield columns.row(record, start, rows)


class _CsvColumns:
    """Where each known column sits in a CSV manifest's records."""

    def __init__(self, positions: Mapping[str, int], width: int) -> None:
        self.width = width
        # A column the header lacks reads the empty cell padded after the last.
        self.url = positions.get("url", width)
        self.file = positions.get("file", width)
        self.id = positions.get("id", width)
        self.metadata = positions.get("metadata", width)
        self.signed = positions.get("requireSignedURLs", width)
        self.creator = positions.get("creator", width)

    @classmethod
    def from_header(
        cls, record: list[str], name: str, line: int
    ) -> _CsvColumns | RowError:
        """Read the header row; unknown columns are ignored with a warning."""
        positions: dict[str, int] = {}
        unknown: list[str] = []
        for index, cell in enumerate(record):
            column = _COLUMN_BY_FOLDED.get(cell.strip().casefold())
            if column is None:
                unknown.append(cell.strip())
            elif column in positions:
                return RowError(name, line, "header", f"names {column!r} twice")
            else:
                positions[column] = index

        if "url" not in positions and "file" not in positions:
            found = ", ".join(repr(shorten(cell)) for cell in record[:6])
            return RowError(
                name, line, "header", f"needs a 'url' or a 'file' column; found {found}"
            )
        if unknown:
            logger.warning(
                "manifest %s: ignoring unknown columns %s",
                name,
                ", ".join(repr(shorten(cell)) for cell in unknown[:6]),
            )
        return cls(positions, len(record))

    def row(
        self, record: list[str], line: int, rows: RowBuilder
    ) -> ManifestRow | RowError:
        """Turn one record into a row, converting each cell from text."""
        if len(record) > self.width:
            return rows.error(
                line,
                "row",
                f"has {len(record)} fields but the header has {self.width}; "
                "quote any field that holds a comma",
            )
        # A short record is allowed: its missing trailing cells are empty.
        cells = record + [""] * (self.width + 1 - len(record))
        url = cells[self.url].strip()
        file = cells[self.file].strip()
        custom_id = cells[self.id].strip()
        metadata_text = cells[self.metadata].strip()
        signed_text = cells[self.signed].strip()
        creator = cells[self.creator].strip()

        metadata: Any = None
        if metadata_text and not is_plain_object(metadata_text):
            metadata = parse_json(metadata_text)
            if isinstance(metadata, JsonProblem):
                return rows.error(line, "metadata", metadata.message)
        signed = _BOOLEANS.get(signed_text.lower())
        if signed is None:
            return rows.error(
                line,
                "requireSignedURLs",
                f"must be true or false, not {shorten(signed_text)!r}",
            )
        return rows.build(
            line,
            url or None,
            file or None,
            custom_id or None,
            metadata,
            signed,
            creator or None,
            metadata_text or None,
        )


def _read_jsonl(lines: _Lines, rows: RowBuilder) -> Iterator[ManifestRow | RowError]:
    unknown: set[str] = set()
    try:
        for text in lines:
            if lines.errors:
                yield from lines.take_errors()
                continue
            if not text.strip():
                continue
            yield _jsonl_row(text, lines.number, rows, unknown)
    except _READ_ERRORS as error:
        yield lines.broken(error)
    if unknown:
        logger.warning(
            "manifest %s: ignoring unknown keys %s",
            rows.name,
            ", ".join(repr(shorten(key)) for key in sorted(unknown)[:6]),
        )


def _jsonl_row(
    text: str, line: int, rows: RowBuilder, unknown: set[str]
) -> ManifestRow | RowError:
    """Turn one JSON Lines line into a row, checking each value's JSON type."""
    document = parse_json(text.strip(" \t\r\n"))
    if isinstance(document, JsonProblem):
        return rows.error(line, "row", document.message)
    if not isinstance(document, dict):
        return rows.error(
            line, "row", f"must be a JSON object, not {json_type(document)}"
        )
    try:
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return rows.error(line, "row", "holds a \\u escape that is not valid UTF-8")

    values: dict[str, Any] = {}
    for key, value in document.items():
        column = _COLUMN_BY_FOLDED.get(key.casefold())
        if column is None:
            if len(unknown) < 100:
                unknown.add(key)
        else:
            values[column] = value

    strings: dict[str, str | None] = {}
    for column in ("url", "file", "id", "creator"):
        value = values.get(column)
        if value is not None and not isinstance(value, str):
            return rows.error(line, column, f"must be a string, not {json_type(value)}")
        strings[column] = value or None

    given = values.get("requireSignedURLs")
    signed = given
    if given is None or isinstance(given, str):
        signed = _BOOLEANS.get((given or "").lower())
    if not isinstance(signed, bool):
        return rows.error(
            line,
            "requireSignedURLs",
            f"must be true or false, not {shorten(json.dumps(given))}",
        )
    return rows.build(
        line,
        strings["url"],
        strings["file"],
        strings["id"],
        values.get("metadata"),
        signed,
        strings["creator"],
    )


def _printable(name: str) -> str:
    """A file name as it can be shown and stored, whatever bytes it was made of."""
    return name.encode(errors="surrogateescape").decode(errors="replace")


def manifest_rows(
    paths: Iterable[str],
    *,
    format: Format | None = None,
    id_from: IdFrom | None = None,
    stdin: IO[bytes] | None = None,
) -> Iterator[ManifestRow | RowError]:
    """Read several manifests in turn, as ``read_manifest`` reads one."""
    for path in paths:
        yield from read_manifest(path, format=format, id_from=id_from, stdin=stdin)
