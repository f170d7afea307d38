"""Loading manifest rows into the job table, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from migrator.errors import StoreError
from migrator.manifest import RowError, read_manifest
from migrator.store import Completed, Failed, JobStore, LoadCounts, State
from migrator.store.reports import ReportRow

OWNER = "test-run"


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    opened = JobStore.open(store_url)
    yield opened
    opened.close()


def manifest(
    tmp_path: Path, rows: list[dict[str, object]], name: str = "m.jsonl"
) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def load(
    store: JobStore, path: str, batch_rows: int = 10_000
) -> tuple[LoadCounts, list[str]]:
    errors: list[RowError] = []
    counts = store.load(read_manifest(path), errors.append, batch_rows=batch_rows)
    return counts, [f"{error.field}: {error.message}" for error in errors]


def counts(
    loaded: int = 0, unchanged: int = 0, changed: int = 0, rejected: int = 0
) -> LoadCounts:
    return LoadCounts(loaded, unchanged, changed, rejected)


def rows(store: JobStore) -> dict[str, ReportRow]:
    """Every row of the job table, by source."""
    found: dict[str, ReportRow] = {}
    for state in State:
        found |= {row.source: row for row in store.rows_in(state)}
    return found


def finish(store: JobStore, outcome: str) -> None:
    """Claim every pending row and settle it: done, failed, or left claimed."""
    for claim in store.claim(OWNER, 100, lease=600):
        if outcome == "done":
            store.record(
                [Completed(claim.row_id, claim.attempt, OWNER, "cf-1", ["v"], None)]
            )
        elif outcome == "failed":
            store.record(
                [Failed(claim.row_id, claim.attempt, OWNER, "5455", "bad format", 415)]
            )


A = {"url": "https://img.test/a.jpg", "id": "shop/a.jpg", "metadata": {"sku": "A"}}
B = {"url": "https://img.test/b.jpg", "creator": "sync"}


def test_new_rows_are_loaded_pending_upload(store: JobStore, tmp_path: Path) -> None:
    path = manifest(tmp_path, [A, B])

    result, errors = load(store, path)

    assert (result, errors) == (counts(loaded=2), [])
    a, b = rows(store)["https://img.test/a.jpg"], rows(store)["https://img.test/b.jpg"]
    assert (a.state, a.action.value, a.attempts) == (State.PENDING, "upload", 0)
    assert (a.custom_id, a.metadata, a.creator) == ("shop/a.jpg", {"sku": "A"}, None)
    assert (b.custom_id, b.metadata, b.creator) == (None, None, "sync")
    assert (a.manifest, a.line, b.line) == (path, 1, 2)
    assert a.require_signed_urls is False


def test_new_rows_are_due_for_a_run_at_once(store: JobStore, tmp_path: Path) -> None:
    load(store, manifest(tmp_path, [A, B]))

    claimed = store.claim(OWNER, 10, lease=60)

    assert sorted(claim.source for claim in claimed) == [A["url"], B["url"]]
    assert {claim.key for claim in claimed} == {"id:shop/a.jpg", f"source:{B['url']}"}


def test_reloading_the_same_manifest_changes_nothing(
    store: JobStore, tmp_path: Path
) -> None:
    path = manifest(tmp_path, [A, B])
    load(store, path)
    before = rows(store)

    result, errors = load(store, path)

    assert (result, errors) == (counts(unchanged=2), [])
    assert rows(store) == before


def test_changed_metadata_of_a_done_row_is_pending_update(
    store: JobStore, tmp_path: Path
) -> None:
    load(store, manifest(tmp_path, [A, B]))
    finish(store, "done")

    changed = A | {"metadata": {"sku": "A", "alt": "Boot"}}
    result, errors = load(store, manifest(tmp_path, [changed, B]))

    assert (result, errors) == (counts(unchanged=1, changed=1), [])
    a = rows(store)[A["url"]]
    assert (a.state, a.action.value, a.attempts) == (State.PENDING, "update", 0)
    assert (a.metadata, a.image_id) == ({"sku": "A", "alt": "Boot"}, "cf-1")
    assert rows(store)[B["url"]].state is State.DONE


def test_changed_creator_or_signed_urls_also_make_an_update(
    store: JobStore, tmp_path: Path
) -> None:
    load(store, manifest(tmp_path, [B]))
    finish(store, "done")

    result, _ = load(store, manifest(tmp_path, [B | {"requireSignedURLs": True}]))

    assert result == counts(changed=1)
    b = rows(store)[B["url"]]
    assert (b.state, b.action.value, b.require_signed_urls) == (
        State.PENDING,
        "update",
        True,
    )


def test_changed_pending_row_takes_the_new_content(
    store: JobStore, tmp_path: Path
) -> None:
    load(store, manifest(tmp_path, [A]))

    moved = A | {"url": "https://img.test/a2.jpg"}
    result, errors = load(store, manifest(tmp_path, [moved], "fixed.jsonl"))

    assert (result, errors) == (counts(changed=1), [])
    (row,) = rows(store).values()
    assert (row.source, row.state, row.action.value) == (
        moved["url"],
        State.PENDING,
        "upload",
    )
    assert row.manifest == str(tmp_path / "fixed.jsonl")


def test_changed_failed_row_is_pending_again_with_fresh_attempts(
    store: JobStore, tmp_path: Path
) -> None:
    load(store, manifest(tmp_path, [A]))
    finish(store, "failed")

    fixed = A | {"url": "https://img.test/a.png"}
    result, _ = load(store, manifest(tmp_path, [fixed]))

    assert result == counts(changed=1)
    (row,) = rows(store).values()
    assert (row.state, row.attempts, row.source) == (State.PENDING, 0, fixed["url"])
    assert store.claim(OWNER, 10, lease=60)[0].source == fixed["url"]


def test_unchanged_failed_row_stays_failed(store: JobStore, tmp_path: Path) -> None:
    path = manifest(tmp_path, [A])
    load(store, path)
    finish(store, "failed")

    result, _ = load(store, path)

    assert result == counts(unchanged=1)
    assert rows(store)[A["url"]].state is State.FAILED


def test_changed_claimed_row_is_rejected_while_its_run_holds_it(
    store: JobStore, tmp_path: Path
) -> None:
    load(store, manifest(tmp_path, [A]))
    finish(store, "claimed")

    result, errors = load(store, manifest(tmp_path, [A | {"creator": "late"}]))

    assert result == counts(rejected=1)
    assert errors == [
        f"row: changed while run {OWNER!r} is uploading it; "
        "load it again when that run ends"
    ]
    assert rows(store)[A["url"]].state is State.CLAIMED


def test_new_source_under_a_done_custom_id_is_rejected(
    store: JobStore, tmp_path: Path
) -> None:
    load(store, manifest(tmp_path, [A]))
    finish(store, "done")

    result, errors = load(store, manifest(tmp_path, [A | {"url": "https://x.test/"}]))

    assert result == counts(rejected=1)
    assert errors[0].startswith(
        f"id: 'shop/a.jpg' may already hold the image from {A['url']}"
    )
    assert rows(store)[A["url"]].state is State.DONE


@pytest.mark.parametrize("batch_rows", [10_000, 1])
def test_one_id_for_two_sources_in_one_load_is_rejected(
    store: JobStore, tmp_path: Path, batch_rows: int
) -> None:
    other = A | {"url": "https://img.test/other.jpg"}
    path = manifest(tmp_path, [A, other])

    result, errors = load(store, path, batch_rows=batch_rows)

    assert result == counts(loaded=1, rejected=1)
    assert errors == [
        f"id: 'shop/a.jpg' is also the id of {A['url']} ({path}:1); "
        "give each image its own id"
    ]


@pytest.mark.parametrize("batch_rows", [10_000, 1])
def test_repeated_row_in_one_load(
    store: JobStore, tmp_path: Path, batch_rows: int
) -> None:
    path = manifest(tmp_path, [B, B, B | {"creator": "other"}])

    result, errors = load(store, path, batch_rows=batch_rows)

    assert result == counts(loaded=1, unchanged=1, rejected=1)
    assert errors == [
        f"row: repeats {path}:1 with different metadata, requireSignedURLs or creator"
    ]


def test_manifest_errors_are_counted_and_reported(
    store: JobStore, tmp_path: Path
) -> None:
    path = manifest(tmp_path, [A, {"url": "ftp://img.test/x"}, B])

    result, errors = load(store, path)

    assert result == counts(loaded=2, rejected=1)
    assert errors == ["url: must be an http or https URL, not 'ftp'"]


def test_small_batches_load_the_same_rows(store: JobStore, tmp_path: Path) -> None:
    many = [{"url": f"https://img.test/{n}.jpg", "id": f"n/{n}"} for n in range(25)]
    path = manifest(tmp_path, many)

    first, _ = load(store, path, batch_rows=4)
    second, _ = load(store, path, batch_rows=7)

    assert (first, second) == (counts(loaded=25), counts(unchanged=25))
    assert len(rows(store)) == 25


def test_csv_metadata_is_stored_as_written(store: JobStore, tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('url,metadata\nhttps://img.test/a,"{""a"": 1.5, ""b"": [true]}"\n')

    load(store, str(path))

    (row,) = rows(store).values()
    assert row.metadata == {"a": 1.5, "b": [True]}


def test_very_long_sources_and_ids_load_on_every_backend(
    store: JobStore, tmp_path: Path
) -> None:
    long_url = "https://img.test/" + "p" * 6000 + ".jpg"
    long_id = "é" * 1024  # 2048 bytes of UTF-8
    path = manifest(tmp_path, [{"url": long_url}, {"url": B["url"], "id": long_id}])

    first, errors = load(store, path)
    second, _ = load(store, path)

    assert (first, errors, second) == (counts(loaded=2), [], counts(unchanged=2))
    assert rows(store)[long_url].custom_id is None
    assert rows(store)[B["url"]].custom_id == long_id


def test_a_database_failure_is_a_store_error(sqlite_url: str, tmp_path: Path) -> None:
    store = JobStore.open(sqlite_url)
    with store.transaction() as connection:
        connection.exec_driver_sql("DROP TABLE images")

    with pytest.raises(StoreError, match="job table write failed after 0 new rows"):
        load(store, manifest(tmp_path, [A]))
    store.close()


def test_metadata_written_differently_is_unchanged(
    store: JobStore, tmp_path: Path
) -> None:
    spaced = tmp_path / "spaced.csv"
    spaced.write_text('url,metadata\nhttps://img.test/a,"{""a"": 1, ""b"": ""x y""}"\n')
    compact = tmp_path / "compact.jsonl"
    compact.write_text(
        '{"url": "https://img.test/a", "metadata": {"b": "x y", "a": 1}}\n'
    )
    load(store, str(spaced))
    finish(store, "done")

    result, errors = load(store, str(compact))

    assert (result, errors) == (counts(unchanged=1), [])
    assert rows(store)["https://img.test/a"].state is State.DONE


def test_a_row_another_load_commits_meanwhile_is_compared_not_lost(
    postgres_url: str, tmp_path: Path
) -> None:
    # Two hosts load one PostgreSQL table at once: the other load commits a row
    # with the same key after this batch read the table's highest id, just
    # before this batch inserts.
    store, other = JobStore.open(postgres_url), JobStore.open(postgres_url)
    theirs = manifest(tmp_path, [{**A, "metadata": {"sku": "old"}}], "theirs.jsonl")
    interleaved: list[LoadCounts] = []

    def load_theirs_first(*execution: Any) -> None:
        statement = execution[2]
        if statement.startswith("INSERT INTO images") and not interleaved:
            interleaved.append(load(other, theirs)[0])

    event.listen(store.engine, "before_cursor_execute", load_theirs_first)
    try:
        result, errors = load(store, manifest(tmp_path, [A]))
    finally:
        event.remove(store.engine, "before_cursor_execute", load_theirs_first)
        other.close()

    assert (interleaved, result, errors) == ([counts(loaded=1)], counts(changed=1), [])
    assert rows(store)[A["url"]].metadata == {"sku": "A"}
    store.close()
