"""Every rule a manifest row is checked against, and the metadata a row sends."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.manifest import (
    MIGRATION_KEY_FIELD,
    IdFrom,
    ManifestRow,
    RowError,
    migration_key,
    read_manifest,
    row_key,
    upload_metadata,
)
from migrator.manifest.rows import _surely_fits, is_plain_object, parse_json
from migrator.rules import MAX_FILE_BYTES, MAX_METADATA_BYTES, encode_metadata


def one(path: Path, line: str, **options: object) -> ManifestRow | RowError:
    """Read a one-row JSON Lines manifest holding ``line``."""
    path.write_text(line + "\n", encoding="utf-8")
    (item,) = read_manifest(str(path), **options)  # type: ignore[arg-type]
    return item


def row_of(tmp_path: Path, **fields: object) -> ManifestRow | RowError:
    fields.setdefault("url", "https://img.test/a.jpg")
    return one(tmp_path / "m.jsonl", json.dumps(fields))


def problem(item: ManifestRow | RowError) -> str:
    assert isinstance(item, RowError), f"accepted: {item}"
    return f"{item.field}: {item.message}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://img.test/a.jpg", "url: must be an http or https URL, not 'ftp'"),
        ("img.test/a.jpg", "url: 'img.test/a.jpg' is not an absolute http or https"),
        ("https:///a.jpg", "url: 'https:///a.jpg' is not an absolute"),
        ("https://img.test/a b.jpg", "url: must not contain spaces or control"),
        ("https://img.test/a\tb.jpg", "url: must not contain spaces or control"),
        ("https://img.test:99999/a.jpg", "url: has port 99999, more than 65535"),
    ],
)
def test_url_must_be_absolute_http(tmp_path: Path, url: str, expected: str) -> None:
    assert problem(row_of(tmp_path, url=url)).startswith(expected)


@pytest.mark.parametrize(
    "url",
    [
        "http://img.test/a.jpg",
        "HTTPS://IMG.TEST/A.JPG",
        "https://user:pass@img.test:8443/a.jpg?x=1#f",
        "https://[::1]:8080/a.jpg",
        "https://img.test",
        "https://img.test/caf%C3%A9.jpg",
    ],
)
def test_valid_urls_are_accepted(tmp_path: Path, url: str) -> None:
    item = row_of(tmp_path, url=url)

    assert isinstance(item, ManifestRow)
    assert item.source == url


def test_row_needs_a_url_or_a_file_but_not_both(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")

    assert problem(one(tmp_path / "m.jsonl", '{"id": "a"}')).startswith(
        "url: is missing"
    )
    assert problem(row_of(tmp_path, file="a.jpg")) == (
        "row: has both a url and a file; give one"
    )


def test_file_must_exist(tmp_path: Path) -> None:
    assert problem(one(tmp_path / "m.jsonl", '{"file": "gone.jpg"}')).endswith(
        "gone.jpg' does not exist"
    )


def test_file_must_be_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()

    assert problem(one(tmp_path / "m.jsonl", '{"file": "folder"}')).endswith(
        "is not a regular file"
    )


def test_file_must_be_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    # Root reads anything, so the permission check is made to say no.
    monkeypatch.setattr(os, "access", lambda path, mode: False)

    assert problem(one(tmp_path / "m.jsonl", '{"file": "a.jpg"}')).endswith(
        "cannot be read: permission denied"
    )


def test_file_must_not_be_empty_nor_too_large(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with (tmp_path / "big.jpg").open("wb") as big:
        big.truncate(MAX_FILE_BYTES + 1)

    assert problem(one(tmp_path / "m.jsonl", '{"file": "empty.jpg"}')).endswith(
        "is empty"
    )
    assert problem(one(tmp_path / "m.jsonl", '{"file": "big.jpg"}')).endswith(
        f"is {MAX_FILE_BYTES + 1} bytes, more than the {MAX_FILE_BYTES} "
        "Cloudflare stores"
    )


def test_file_path_must_not_hold_control_characters(tmp_path: Path) -> None:
    assert problem(one(tmp_path / "m.jsonl", '{"file": "a\\u0000.jpg"}')) == (
        "file: must not contain control characters"
    )


def test_absolute_file_path_is_kept_as_is(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()

    item = one(elsewhere / "m.jsonl", json.dumps({"file": str(image)}))

    assert isinstance(item, ManifestRow)
    assert item.source == str(image)


@pytest.mark.parametrize(
    ("custom_id", "expected"),
    [
        ("x" * 1025, "id: is 1025 characters, more than 1024"),
        ("/a.jpg", "id: must not start or end with '/'"),
        ("a/", "id: must not start or end with '/'"),
        ("3fa85f64-5717-4562-b3fc-2c963f66afa6", "id: must not be a UUID"),
        ("a\u0007b", "id: must not contain control characters"),
    ],
)
def test_custom_id_rules(tmp_path: Path, custom_id: str, expected: str) -> None:
    assert problem(row_of(tmp_path, id=custom_id)).startswith(expected)


def test_custom_id_may_hold_sub_paths_and_utf8(tmp_path: Path) -> None:
    item = row_of(tmp_path, id="produits/été/1.jpg")

    assert isinstance(item, ManifestRow)
    assert item.key == "id:produits/été/1.jpg"


def test_empty_id_means_no_custom_id(tmp_path: Path) -> None:
    item = row_of(tmp_path, id="")

    assert isinstance(item, ManifestRow)
    assert item.custom_id is None


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ("[1]", "metadata: must be a JSON object, not list"),
        ("{bad", "metadata: is not valid JSON"),
        ('{"a": NaN}', "metadata: is not valid JSON: NaN is not allowed"),
        ('{"a": 1e999}', "metadata: is not valid JSON: 1e999 is too large"),
        ('{"a": "\\ud800"}', "metadata: holds a \\u escape that is not valid UTF-8"),
        (
            json.dumps({MIGRATION_KEY_FIELD: "x"}),
            "metadata: must not have a 'migrator_key' field",
        ),
    ],
)
def test_metadata_rules_in_csv(tmp_path: Path, metadata: str, expected: str) -> None:
    manifest = tmp_path / "m.csv"
    quoted = '"' + metadata.replace('"', '""') + '"'
    manifest.write_text(f"url,id,metadata\nhttps://img.test/a,a,{quoted}\n")

    (item,) = read_manifest(str(manifest))

    assert problem(item).startswith(expected)


def metadata_of_size(size: int) -> dict[str, str]:
    """A metadata object whose compact JSON is exactly ``size`` bytes."""
    metadata = {"k": "x" * (size - len('{"k":""}'))}
    assert len(encode_metadata(metadata).encode()) == size
    return metadata


def test_metadata_with_a_custom_id_may_use_all_1024_bytes(tmp_path: Path) -> None:
    fits = row_of(tmp_path, id="a", metadata=metadata_of_size(MAX_METADATA_BYTES))
    too_big = row_of(
        tmp_path, id="a", metadata=metadata_of_size(MAX_METADATA_BYTES + 1)
    )

    assert isinstance(fits, ManifestRow)
    assert problem(too_big) == "metadata: is 1025 bytes of JSON, more than 1024"


def test_metadata_without_a_custom_id_leaves_room_for_migrator_key(
    tmp_path: Path,
) -> None:
    room = MAX_METADATA_BYTES - len(f',"{MIGRATION_KEY_FIELD}":"{"0" * 32}"')
    fits = row_of(tmp_path, metadata=metadata_of_size(room))
    too_big = row_of(tmp_path, metadata=metadata_of_size(room + 1))

    assert isinstance(fits, ManifestRow)
    sent = upload_metadata(fits)
    assert sent is not None
    assert len(encode_metadata(sent).encode()) == MAX_METADATA_BYTES
    assert problem(too_big) == (
        f"metadata: is {room + 1} bytes of JSON; with the 'migrator_key' field a row "
        "without an id carries it would be 1025, more than 1024"
    )


def test_metadata_budget_in_csv_counts_the_compact_form(tmp_path: Path) -> None:
    # 1e2 is sent as 100.0: 1023 bytes as written, 1025 as sent.
    metadata = metadata_of_size(MAX_METADATA_BYTES - 9)
    text = encode_metadata(metadata | {"n": 0}).replace('"n":0', '"n":1e2')
    assert len(text) == MAX_METADATA_BYTES - 1
    quoted = text.replace('"', '""')
    manifest = tmp_path / "m.csv"
    manifest.write_text(f'url,id,metadata\nhttps://img.test/a,a,"{quoted}"\n')

    (item,) = read_manifest(str(manifest))

    assert problem(item) == "metadata: is 1025 bytes of JSON, more than 1024"


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            st.integers(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=40),
            st.booleans(),
            st.none(),
        ),
        max_size=30,
    ),
    st.booleans(),
)
def test_size_shortcut_never_admits_what_the_compact_form_refuses(
    metadata: dict[str, object], spaced: bool
) -> None:
    text = json.dumps(metadata, ensure_ascii=False, indent=1 if spaced else None)
    compact = len(encode_metadata(metadata).encode())

    for limit in (compact - 1, compact, compact + 30):
        if _surely_fits(text, limit):
            assert compact <= limit


_PLAIN_VALUES = st.one_of(st.text(max_size=20), st.integers(), st.booleans(), st.none())


@given(st.dictionaries(st.text(max_size=8), _PLAIN_VALUES, max_size=10))
def test_compact_objects_of_plain_values_are_plain(metadata: dict[str, object]) -> None:
    text = encode_metadata(metadata)

    assert is_plain_object(text) == ("\\" not in text)


@given(
    st.text(
        alphabet=st.sampled_from(
            list('{}[]:,"\\ -.0123456789eEtruefalsnmigrator_key\n')
        ),
        max_size=40,
    )
)
def test_plain_text_is_json_no_shorter_than_its_compact_form(text: str) -> None:
    if not is_plain_object(text):
        return
    parsed = parse_json(text)

    assert isinstance(parsed, dict)
    assert len(encode_metadata(parsed).encode()) <= len(text.encode())
    assert (MIGRATION_KEY_FIELD in parsed) == (f'"{MIGRATION_KEY_FIELD}":' in text)


@pytest.mark.parametrize(
    "text",
    ['{"migrator_key":"x"}', '{"a":1,"migrator_key":null}'],
)
def test_plain_metadata_may_not_set_the_migration_key(
    tmp_path: Path, text: str
) -> None:
    quoted = text.replace('"', '""')
    manifest = tmp_path / "m.csv"
    manifest.write_text(f'url,metadata\nhttps://img.test/a,"{quoted}"\n')

    (item,) = read_manifest(str(manifest))

    assert problem(item).startswith("metadata: must not have a 'migrator_key'")


@pytest.mark.parametrize(
    ("given", "expected"), [("TRUE", True), ("1", True), ("yes", True), ("", False)]
)
def test_require_signed_urls_accepts_usual_spellings(
    tmp_path: Path, given: str, expected: bool
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"url,requireSignedURLs\nhttps://img.test/a,{given}\n")

    (item,) = read_manifest(str(manifest))

    assert isinstance(item, ManifestRow)
    assert item.require_signed_urls is expected


def test_require_signed_urls_rejects_other_values(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("url,requireSignedURLs\nhttps://img.test/a,sometimes\n")

    (item,) = read_manifest(str(manifest))

    assert problem(item) == "requireSignedURLs: must be true or false, not 'sometimes'"


def test_signed_urls_cannot_go_with_a_custom_id(tmp_path: Path) -> None:
    assert problem(row_of(tmp_path, id="a", requireSignedURLs=True)) == (
        "requireSignedURLs: cannot be true for an image with a custom ID"
    )


def test_creator_rules(tmp_path: Path) -> None:
    assert problem(row_of(tmp_path, creator="c" * 1025)) == (
        "creator: is 1025 characters, more than 1024"
    )
    assert problem(row_of(tmp_path, creator="a\u0000b")) == (
        "creator: must not contain NUL characters"
    )


@pytest.mark.parametrize(
    ("url", "derived"),
    [
        ("https://cdn.test/photos/2019/cat.jpg", "photos/2019/cat.jpg"),
        ("https://cdn.test/photos/caf%C3%A9%201.jpg?w=100#top", "photos/café 1.jpg"),
    ],
)
def test_id_from_path_uses_the_urls_path(
    tmp_path: Path, url: str, derived: str
) -> None:
    item = one(tmp_path / "m.jsonl", json.dumps({"url": url}), id_from=IdFrom.PATH)

    assert isinstance(item, ManifestRow)
    assert (item.custom_id, item.key) == (derived, f"id:{derived}")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.test/", "id: '', from the URL's path, must not be empty"),
        ("https://cdn.test/a/", "id: 'a/', from the URL's path, must not start or end"),
        ("https://cdn.test/%FF.jpg", "id: cannot come from the URL's path"),
        (
            "https://cdn.test/3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "id: '3fa85f64-5717-4562-b3fc-2c963f66afa6', from the URL's path, must not",
        ),
    ],
)
def test_id_from_path_checks_the_derived_id(
    tmp_path: Path, url: str, expected: str
) -> None:
    item = one(tmp_path / "m.jsonl", json.dumps({"url": url}), id_from=IdFrom.PATH)

    assert problem(item).startswith(expected)


def test_id_from_path_uses_the_files_path_relative_to_the_manifest(
    tmp_path: Path,
) -> None:
    (tmp_path / "shop" / "boots").mkdir(parents=True)
    (tmp_path / "shop" / "boots" / "a.jpg").write_bytes(b"x")

    item = one(
        tmp_path / "m.jsonl",
        json.dumps({"file": str(tmp_path / "shop" / "boots" / "a.jpg")}),
        id_from=IdFrom.PATH,
    )

    assert isinstance(item, ManifestRow)
    assert item.custom_id == "shop/boots/a.jpg"


def test_id_from_path_refuses_a_file_outside_the_manifests_folder(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "lists").mkdir()

    item = one(
        tmp_path / "lists" / "m.jsonl", '{"file": "../a.jpg"}', id_from=IdFrom.PATH
    )

    assert problem(item).startswith("id: cannot come from the file's path")


def test_given_id_wins_over_id_from_path(tmp_path: Path) -> None:
    item = one(
        tmp_path / "m.jsonl",
        '{"url": "https://cdn.test/x.jpg", "id": "mine"}',
        id_from=IdFrom.PATH,
    )

    assert isinstance(item, ManifestRow)
    assert item.custom_id == "mine"


def test_upload_metadata_adds_migrator_key_only_without_a_custom_id(
    tmp_path: Path,
) -> None:
    plain = row_of(tmp_path, metadata={"a": 1})
    named = row_of(tmp_path, id="n", metadata={"a": 1})
    bare = row_of(tmp_path)
    assert isinstance(plain, ManifestRow)
    assert isinstance(named, ManifestRow)
    assert isinstance(bare, ManifestRow)

    assert upload_metadata(plain) == {
        "a": 1,
        MIGRATION_KEY_FIELD: migration_key("source:https://img.test/a.jpg"),
    }
    assert upload_metadata(named) == {"a": 1}
    assert upload_metadata(bare) == {MIGRATION_KEY_FIELD: migration_key(bare.key)}
    assert len(migration_key(bare.key)) == 32


def test_content_hash_follows_every_field_cloudflare_stores(tmp_path: Path) -> None:
    base = {"url": "https://img.test/a.jpg", "id": "a"}
    variants = [
        base,
        base | {"url": "https://img.test/b.jpg"},
        base | {"metadata": {"x": 1}},
        base | {"creator": "me"},
        {"url": base["url"], "requireSignedURLs": True},
    ]

    hashes = {row_of(tmp_path, **fields).content_hash for fields in variants}  # type: ignore[union-attr]

    assert len(hashes) == len(variants)
    assert row_of(tmp_path, **base) == row_of(tmp_path, **base)


def test_long_keys_are_hashed_and_stay_distinct() -> None:
    short = row_key("a/b.jpg", "https://img.test/x")
    long_one = row_key(None, "https://img.test/" + "x" * 700)
    long_two = row_key(None, "https://img.test/" + "y" * 700)

    assert short == "id:a/b.jpg"
    assert long_one.startswith("source#")
    assert len(long_one) == len("source#") + 64
    assert long_one != long_two
    assert row_key("i" * 700, "s") != row_key(None, "i" * 700)
