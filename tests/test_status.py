"""What status reports, on both backends, and that indexes answer it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from migrator.manifest import read_manifest
from migrator.store import Completed, Failed, JobStore, Retried, State, utcnow
from migrator.store.schema import runs

OWNER = "status-test"


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    opened = JobStore.open(store_url)
    yield opened
    opened.close()


def load_urls(store: JobStore, tmp_path: Path, count: int) -> None:
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://img.test/{n}.jpg\n" for n in range(count)))
    store.load(read_manifest(str(path)))


def settle(store: JobStore, *outcomes: tuple[str, str | None, str]) -> None:
    """Claim one row per outcome and record it: (kind, code, message)."""
    claims = store.claim(OWNER, len(outcomes), lease=600)
    records: list[Any] = []
    for claim, (kind, code, message) in zip(claims, outcomes, strict=True):
        if kind == "done":
            records.append(
                Completed(claim.row_id, claim.attempt, OWNER, "cf", [], None)
            )
        elif kind == "failed":
            records.append(
                Failed(claim.row_id, claim.attempt, OWNER, code, message, 400)
            )
        else:
            later = utcnow() + dt.timedelta(hours=1)
            records.append(
                Retried(
                    claim.row_id, claim.attempt, OWNER, code, message, 502, later, True
                )
            )
    store.record(records)


def test_empty_job_table(store: JobStore) -> None:
    snapshot = store.status()

    assert snapshot.total == 0
    assert set(snapshot.states.values()) == {0}
    assert (snapshot.errors, snapshot.throughput, snapshot.eta_seconds) == (
        [],
        None,
        None,
    )
    assert snapshot.last_run is None


def test_counts_rows_by_state(store: JobStore, tmp_path: Path) -> None:
    load_urls(store, tmp_path, 10)
    settle(store, ("done", None, ""), ("done", None, ""), ("failed", "5455", "bad"))
    store.claim(OWNER, 3, lease=600)

    snapshot = store.status()

    assert snapshot.states == {
        State.PENDING: 4,
        State.CLAIMED: 3,
        State.DONE: 2,
        State.FAILED: 1,
    }
    assert (snapshot.total, snapshot.remaining) == (10, 7)


def test_lists_the_most_common_errors_with_a_sample(
    store: JobStore, tmp_path: Path
) -> None:
    load_urls(store, tmp_path, 6)
    settle(
        store,
        ("failed", "5455", "Unsupported image format"),
        ("failed", "http-404", "origin answered 404"),
        ("failed", "5455", "Unsupported image format"),
        ("retried", "http-502", "origin answered 502"),
    )

    errors = [
        (error.state, error.code, error.count, error.sample_message)
        for error in store.status().errors
    ]

    assert errors == [
        (State.FAILED, "5455", 2, "Unsupported image format"),
        (State.FAILED, "http-404", 1, "origin answered 404"),
        (State.PENDING, "http-502", 1, "origin answered 502"),
    ]


def test_speed_and_time_left_come_from_finished_runs(
    store: JobStore, tmp_path: Path
) -> None:
    load_urls(store, tmp_path, 30)
    first = store.start_run("run-1")
    store.finish_run(first, "finished", {"done": 100, "updated": 20}, 120, 0)
    second = store.start_run("run-2")
    store.finish_run(second, "max-items", {"done": 60, "failed": 9}, 70, 0)
    ended = utcnow()
    with store.transaction() as connection:
        for run_id, seconds in ((first, 60), (second, 30)):
            connection.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    started_at=ended - dt.timedelta(seconds=seconds), ended_at=ended
                )
            )

    snapshot = store.status()

    assert snapshot.throughput == pytest.approx(180 / 90)
    assert snapshot.eta_seconds == pytest.approx(30 / 2)
    assert snapshot.last_run is not None
    assert (snapshot.last_run.owner, snapshot.last_run.exit_reason) == (
        "run-2",
        "max-items",
    )


def test_a_run_still_going_is_shown_but_not_timed(store: JobStore) -> None:
    store.start_run("busy")

    snapshot = store.status()

    assert snapshot.last_run is not None
    assert (snapshot.last_run.owner, snapshot.last_run.ended_at) == ("busy", None)
    assert snapshot.throughput is None


def test_json_form_holds_plain_values(store: JobStore, tmp_path: Path) -> None:
    load_urls(store, tmp_path, 2)
    settle(store, ("failed", None, "no code"))

    document = json.loads(json.dumps(store.status().to_json()))

    assert document["states"] == {"pending": 1, "claimed": 0, "done": 0, "failed": 1}
    assert document["errors"] == [
        {"state": "failed", "code": None, "count": 1, "sample_message": "no code"}
    ]
    assert (document["total"], document["remaining"], document["eta_seconds"]) == (
        2,
        1,
        None,
    )


def test_every_status_query_on_images_is_answered_by_an_index(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = JobStore.open(sqlite_url)
    load_urls(store, tmp_path, 50)
    settle(store, ("failed", "5455", "bad"), ("retried", "http-502", "later"))
    seen: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        if "images" in sql:
            seen.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", remember)
    store.status()
    event.remove(store.engine, "before_cursor_execute", remember)

    with store.reading() as connection:
        plans = [
            " | ".join(
                str(step[-1])
                for step in connection.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {sql}", params
                )
            )
            for sql, params in seen
        ]
    store.close()

    assert len(plans) >= 6
    for plan in plans:
        assert plan.startswith("SEARCH images USING"), plan
        assert "INDEX ix_images_state" in plan, plan
