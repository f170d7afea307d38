"""Reading manifests: every format, compression, encoding and line ending."""

from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path

import pytest

from migrator.errors import ManifestError
from migrator.manifest import (
    MAX_LINE_BYTES,
    Format,
    ManifestRow,
    RowError,
    detect_format,
    manifest_rows,
    read_manifest,
)


def read(path: Path, **options: object) -> tuple[list[ManifestRow], list[str]]:
    """Read a manifest; return its rows and its errors as printed."""
    rows: list[ManifestRow] = []
    errors: list[str] = []
    for item in read_manifest(str(path), **options):  # type: ignore[arg-type]
        if isinstance(item, RowError):
            errors.append(str(item))
        else:
            rows.append(item)
    return rows, errors


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("urls.txt", Format.TEXT),
        ("list.lst", Format.TEXT),
        ("Photos.CSV", Format.CSV),
        ("photos.csv.gz", Format.CSV),
        ("rows.jsonl", Format.JSONL),
        ("rows.ndjson.gz", Format.JSONL),
        ("-", Format.TEXT),
    ],
)
def test_format_comes_from_the_extension(name: str, expected: Format) -> None:
    assert detect_format(name) is expected


def test_unknown_extension_asks_for_format() -> None:
    with pytest.raises(ManifestError, match="--format"):
        detect_format("photos.xlsx")


def test_text_manifest_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "urls.txt",
        "# photos\n\nhttps://a.test/1.jpg\n   \n  https://a.test/2.jpg  \n#x\n",
    )

    rows, errors = read(manifest)

    assert errors == []
    assert [(row.source, row.line) for row in rows] == [
        ("https://a.test/1.jpg", 3),
        ("https://a.test/2.jpg", 5),
    ]
    assert all(row.source_kind == "url" and row.custom_id is None for row in rows)


def test_text_manifest_takes_paths_relative_to_its_folder(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"jpeg")
    manifest = write(tmp_path / "files.txt", "photos/a.jpg\n")

    (row,), errors = read(manifest)

    assert errors == []
    assert row.source == str(tmp_path / "photos" / "a.jpg")
    assert row.source_kind == "file"
    assert row.key == f"source:{tmp_path / 'photos' / 'a.jpg'}"


def test_csv_manifest_reads_every_column(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        "url,id,metadata,requireSignedURLs,creator\n"
        'https://a.test/1.jpg,shop/1.jpg,"{""sku"": ""A-1""}",false,sync\n'
        "https://a.test/2.jpg,,,true,\n",
    )

    (first, second), errors = read(manifest)

    assert errors == []
    assert first.custom_id == "shop/1.jpg"
    assert first.key == "id:shop/1.jpg"
    assert first.metadata == {"sku": "A-1"}
    assert first.metadata_json == '{"sku": "A-1"}'
    assert first.creator == "sync"
    assert first.require_signed_urls is False
    assert second.key == "source:https://a.test/2.jpg"
    assert second.require_signed_urls is True
    assert second.metadata is None
    assert second.creator is None


def test_csv_with_bom_crlf_and_odd_header_case(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        b"\xef\xbb\xbf URL ,ID,RequireSignedUrls\r\nhttps://a.test/1.jpg,a/1,NO\r\n",
    )

    (row,), errors = read(manifest)

    assert errors == []
    assert (row.source, row.custom_id, row.require_signed_urls) == (
        "https://a.test/1.jpg",
        "a/1",
        False,
    )


def test_csv_ignores_unknown_columns_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = write(tmp_path / "m.csv", "url,error_code,id\nhttps://a.test/x,5455,x\n")

    with caplog.at_level(logging.WARNING):
        (row,), errors = read(manifest)

    assert errors == []
    assert row.custom_id == "x"
    assert "error_code" in caplog.text


def test_csv_takes_quoted_commas_and_newlines(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        'url,creator\nhttps://a.test/1.jpg,"Doe, Jane\nand team"\nhttps://a.test/2\n',
    )

    (first, second), errors = read(manifest)

    assert errors == []
    assert first.creator == "Doe, Jane\nand team"
    assert (second.line, second.creator) == (4, None)


def test_csv_without_url_or_file_column_is_one_error(tmp_path: Path) -> None:
    manifest = write(tmp_path / "m.csv", "https://a.test/1.jpg\nhttps://a.test/2.jpg\n")

    rows, errors = read(manifest)

    assert rows == []
    assert errors == [
        f"{manifest}:1: header: needs a 'url' or a 'file' column; "
        "found 'https://a.test/1.jpg'"
    ]


def test_csv_header_naming_a_column_twice_is_an_error(tmp_path: Path) -> None:
    manifest = write(tmp_path / "m.csv", "url,id,ID\nhttps://a.test/1.jpg,a,b\n")

    rows, errors = read(manifest)

    assert rows == []
    assert errors == [f"{manifest}:1: header: names 'id' twice"]


def test_csv_row_with_more_fields_than_the_header_is_rejected(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        'url,metadata\nhttps://a.test/1.jpg,{"a": 1, "b": 2}\nhttps://a.test/2.jpg\n',
    )

    (row,), errors = read(manifest)

    assert row.line == 3
    assert errors == [
        f"{manifest}:2: row: has 3 fields but the header has 2; "
        "quote any field that holds a comma"
    ]


def test_csv_with_a_stray_quote_reports_the_lines_it_swallowed(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        'url,id\nhttps://a.test/1.jpg,"a\nhttps://a.test/2.jpg,b"c\n'
        "https://a.test/3.jpg,d\n",
    )

    (row,), errors = read(manifest)

    assert row.custom_id == "d"
    assert len(errors) == 1
    assert errors[0].startswith(f"{manifest}:2: row: is not valid CSV")
    assert "lines 2-3 skipped" in errors[0]


def test_csv_with_a_stray_quote_on_the_last_line_skips_that_line(
    tmp_path: Path,
) -> None:
    manifest = write(tmp_path / "m.csv", 'url,id\n"https://a.test/1.jpg,a\n')

    rows, errors = read(manifest)

    assert rows == []
    assert errors == [
        f"{manifest}:2: row: is not valid CSV (unexpected end of data); "
        "check its quotes (it was skipped)"
    ]


def test_jsonl_manifest_reads_typed_values(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.jsonl",
        '{"url": "https://a.test/1.jpg", "metadata": {"n": 1}, '
        '"requireSignedURLs": true, "creator": "me", "note": "ignored"}\n'
        "\n"
        '{"url": "https://a.test/2.jpg", "id": "b/2", "metadata": null}\n',
    )

    (first, second), errors = read(manifest)

    assert errors == []
    assert (first.metadata, first.require_signed_urls, first.creator) == (
        {"n": 1},
        True,
        "me",
    )
    assert first.metadata_json == '{"n":1}'
    assert (second.line, second.custom_id, second.metadata) == (3, "b/2", None)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("[1, 2]", "row: must be a JSON object, not an array"),
        ('{"url": 7}', "url: must be a string, not a number"),
        ('{"url": "https://a.test/x", "id": ["a"]}', "id: must be a string, not an"),
        (
            '{"url": "https://a.test/x", "requireSignedURLs": "maybe"}',
            'requireSignedURLs: must be true or false, not "maybe"',
        ),
        ('{"url": "https://a.test/x", "metadata": "{}"}', "metadata: must be a JSON"),
        ('{"url": "https://a.test/\\ud800"}', "row: holds a \\u escape"),
        ("{not json}", "row: is not valid JSON"),
        ("[" * 30_000, "row: is nested too deeply"),
    ],
)
def test_jsonl_rejects_wrong_types_and_bad_json(
    tmp_path: Path, line: str, error: str
) -> None:
    manifest = write(tmp_path / "m.jsonl", line + "\n")

    rows, errors = read(manifest)

    assert rows == []
    assert len(errors) == 1
    assert errors[0].startswith(f"{manifest}:1: {error}")


def test_gzip_is_recognised_by_content_whatever_the_name(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "urls.txt", gzip.compress(b"https://a.test/1.jpg\r\n# c\r\n")
    )

    (row,), errors = read(manifest)

    assert errors == []
    assert row.source == "https://a.test/1.jpg"


def test_truncated_gzip_ends_the_manifest_with_an_error(tmp_path: Path) -> None:
    body = gzip.compress(b"".join(b"https://a.test/%d.jpg\n" % n for n in range(5000)))
    manifest = write(tmp_path / "urls.txt.gz", body[: len(body) // 2])

    rows, errors = read(manifest)

    assert rows
    assert len(errors) == 1
    assert "file: cannot be read past line" in errors[0]


def test_stdin_is_read_with_dash(tmp_path: Path) -> None:
    stdin = io.BytesIO(b"https://a.test/1.jpg\nhttps://a.test/2.jpg\n")

    items = list(read_manifest("-", stdin=stdin))

    assert [item.line for item in items] == [1, 2]
    assert all(isinstance(item, ManifestRow) for item in items)
    assert {item.manifest for item in items} == {"<stdin>"}


def test_format_option_overrides_the_extension(tmp_path: Path) -> None:
    manifest = write(tmp_path / "export.dat", '{"url": "https://a.test/1.jpg"}\n')

    (row,), errors = read(manifest, format=Format.JSONL)

    assert errors == []
    assert row.source == "https://a.test/1.jpg"


def test_invalid_utf8_line_is_reported_and_reading_goes_on(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "u.txt", b"https://a.test/\xff.jpg\nhttps://a.test/ok\n"
    )

    (row,), errors = read(manifest)

    assert row.line == 2
    assert errors == [f"{manifest}:1: line: is not UTF-8: byte 16 is 0xff"]


def test_huge_line_is_skipped_without_being_held(tmp_path: Path) -> None:
    huge = b"https://a.test/" + b"x" * (MAX_LINE_BYTES * 20) + b"\n"
    manifest = write(tmp_path / "u.csv", b"url\n" + huge + b"https://a.test/ok\n")

    (row,), errors = read(manifest)

    assert row.line == 3
    assert errors == [f"{manifest}:2: line: is longer than {MAX_LINE_BYTES} bytes"]


def test_missing_manifest_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot open manifest"):
        list(read_manifest(str(tmp_path / "gone.txt")))


def test_several_manifests_are_read_in_turn(tmp_path: Path) -> None:
    first = write(tmp_path / "a.txt", "https://a.test/1\n")
    second = write(tmp_path / "b.jsonl", '{"url": "https://a.test/2"}\n')

    items = list(manifest_rows([str(first), str(second)]))

    assert [(item.manifest, item.source) for item in items] == [  # type: ignore[union-attr]
        (str(first), "https://a.test/1"),
        (str(second), "https://a.test/2"),
    ]
