"""No input, however malformed, makes reading a manifest raise."""

from __future__ import annotations

import gzip
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrator.manifest import Format, IdFrom, ManifestRow, RowError, read_manifest
from migrator.store import JobStore

ERROR_LINE = re.compile(r".+:\d+: [A-Za-z]+: .+", re.DOTALL)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Pieces that make a reader take its harder paths: quotes, separators, line
# endings, BOMs, JSON punctuation, escapes, control and non-UTF-8 bytes.
PIECES = st.sampled_from(
    [
        b'"',
        b",",
        b"\n",
        b"\r\n",
        b"\r",
        b"\xef\xbb\xbf",
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b"\\u",
        b"\\ud800",
        b"NaN",
        b"1e999",
        b"#",
        b" ",
        b"\x00",
        b"\xff",
        b"\xc3",
        b"url",
        b"file",
        b"id",
        b"metadata",
        b"requireSignedURLs",
        b"creator",
        b"https://a.test/x.jpg",
        b"http://",
        b"/",
        b"a/b",
        b"..",
        b"true",
        b"null",
        b'{"url": "https://a.test/',
        b"3fa85f64-5717-4562-b3fc-2c963f66afa6",
    ]
)
JUNK = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.one_of(PIECES, st.binary(max_size=8)), max_size=200).map(b"".join),
)


def read_all(content: bytes, format: Format, id_from: IdFrom | None) -> list[object]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "manifest"
        path.write_bytes(content)
        return list(read_manifest(str(path), format=format, id_from=id_from))


def assert_well_formed(items: list[object]) -> None:
    for item in items:
        if isinstance(item, RowError):
            assert ERROR_LINE.fullmatch(str(item)), str(item)
        else:
            assert isinstance(item, ManifestRow)
            for value in item:
                if isinstance(value, str):
                    value.encode()  # storable: valid UTF-8
                    assert "\x00" not in value


@FUZZ
@given(JUNK, st.sampled_from(list(Format)), st.sampled_from([None, IdFrom.PATH]))
def test_junk_yields_rows_or_errors_never_an_exception(
    content: bytes, format: Format, id_from: IdFrom | None
) -> None:
    assert_well_formed(read_all(content, format, id_from))


@FUZZ
@given(JUNK, st.sampled_from(list(Format)), st.booleans())
def test_compressed_junk_and_cut_archives_never_raise(
    content: bytes, format: Format, cut: bool
) -> None:
    packed = gzip.compress(content)
    if cut:
        packed = packed[: len(packed) // 2]

    assert_well_formed(read_all(packed, format, None))


@FUZZ
@given(JUNK, JUNK)
def test_csv_with_a_real_header_and_junk_rows_never_raises(
    first: bytes, second: bytes
) -> None:
    content = b"url,id,metadata,requireSignedURLs,creator\n" + first + b"\n" + second

    assert_well_formed(read_all(content, Format.CSV, None))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(JUNK, min_size=1, max_size=4), st.sampled_from(list(Format)))
def test_whatever_a_junk_manifest_yields_loads_into_the_job_table(
    lines: list[bytes], format: Format
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "manifest"
        path.write_bytes(
            b"url\n" + b"\n".join(lines) if format is Format.CSV else b"\n".join(lines)
        )
        store = JobStore.open(str(Path(folder) / "jobs.db"))
        try:
            counts = store.load(read_manifest(str(path), format=format))
            again = store.load(read_manifest(str(path), format=format))
        finally:
            store.close()

    assert again.loaded == 0
    assert again.unchanged == counts.loaded + counts.unchanged
