"""Reading the job table back: failures, exports, plans, and putting rows back."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import insert, select

from migrator.store import Action, State, utcnow
from migrator.store.reports import Reports, RowFilter
from migrator.store.schema import images


def add_row(store: Reports, source: str, state: State, **values: Any) -> None:
    """Put one row in the table as a load and a run would have left it."""
    now = utcnow()
    row: dict[str, Any] = {
        "key": f"source:{source}",
        "source": source,
        "source_kind": "url",
        "require_signed_urls": False,
        "state": state.value,
        "action": Action.UPLOAD.value,
        "attempts": 1,
        "next_attempt_at": now,
        "in_doubt": False,
        "content_hash": "test",
        "created_at": now,
        "updated_at": now,
    }
    row.update(values)
    with store.transaction() as connection:
        connection.execute(insert(images), [row])


def state_of(store: Reports, source: str) -> dict[str, Any]:
    with store.reading() as connection:
        row = connection.execute(select(images).where(images.c.source == source)).one()
    return dict(row._mapping)


@pytest.fixture
def reports(store_url: str) -> Iterator[Reports]:
    store = Reports.open(store_url)
    yield store
    store.close()


def test_failures_stream_in_id_order_across_pages(
    reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("migrator.store.reports.PAGE_ROWS", 3)
    for n in range(8):
        add_row(reports, f"http://127.0.0.1/{n}.png", State.FAILED, error_code="5455")
    add_row(reports, "http://127.0.0.1/ok.png", State.DONE)

    sources = [row.source for row in reports.rows_in(State.FAILED)]

    assert sources == [f"http://127.0.0.1/{n}.png" for n in range(8)]
    assert len(list(reports.rows_in(State.FAILED, limit=4))) == 4
    assert reports.count_in(State.FAILED) == 8


def test_failures_filter_by_code_source_glob_and_age(reports: Reports) -> None:
    long_ago = utcnow() - dt.timedelta(days=2)
    add_row(reports, "https://a.test/x_1.png", State.FAILED, error_code="5455")
    add_row(reports, "https://a.test/x%1.png", State.FAILED, error_code="http-404")
    add_row(
        reports,
        "https://b.test/y.png",
        State.FAILED,
        error_code="5455",
        updated_at=long_ago,
    )

    def sources(where: RowFilter) -> list[str]:
        return [row.source for row in reports.rows_in(State.FAILED, where)]

    assert sources(RowFilter(error_codes=("http-404",))) == ["https://a.test/x%1.png"]
    assert sources(RowFilter(source_glob="https://a.test/*")) == [
        "https://a.test/x_1.png",
        "https://a.test/x%1.png",
    ]
    assert sources(RowFilter(source_glob="https://a.test/x_?.png")) == [
        "https://a.test/x_1.png"
    ]
    day_ago = utcnow() - dt.timedelta(days=1)
    assert sources(RowFilter(changed_before=day_ago)) == ["https://b.test/y.png"]
    assert sources(RowFilter(error_codes=("5455",), changed_after=day_ago)) == [
        "https://a.test/x_1.png"
    ]


def test_report_rows_decode_metadata_and_variants(reports: Reports) -> None:
    add_row(
        reports,
        "https://a.test/x.png",
        State.DONE,
        custom_id="x",
        image_id="x",
        metadata=json.dumps({"alt": "x"}),
        variants=json.dumps(["https://imagedelivery.net/h/x/public"]),
    )

    (row,) = reports.rows_in(State.DONE)

    assert row.metadata == {"alt": "x"}
    assert row.variants == ["https://imagedelivery.net/h/x/public"]
    assert row.state is State.DONE


def test_retry_puts_only_matching_failed_rows_back_to_pending(reports: Reports) -> None:
    add_row(
        reports, "https://a.test/1.png", State.FAILED, error_code="5455", attempts=5
    )
    add_row(reports, "https://a.test/2.png", State.FAILED, error_code="http-404")
    add_row(reports, "https://a.test/3.png", State.DONE)

    assert reports.retry_failed(RowFilter(error_codes=("5455",))) == 1

    retried = state_of(reports, "https://a.test/1.png")
    assert retried["state"] == "pending"
    assert retried["attempts"] == 0
    assert state_of(reports, "https://a.test/2.png")["state"] == "failed"
    assert reports.retry_failed() == 1
    assert reports.count_in(State.DONE) == 1


def test_requeue_for_upload_forgets_an_assigned_id(reports: Reports) -> None:
    add_row(reports, "https://a.test/1.png", State.DONE, image_id="cf-assigned")
    add_row(
        reports, "https://a.test/2.png", State.DONE, custom_id="two", image_id="two"
    )
    ids = [row.row_id for row in reports.rows_in(State.DONE)]

    assert reports.requeue_done(ids, Action.UPLOAD) == 2

    first = state_of(reports, "https://a.test/1.png")
    assert (first["state"], first["action"], first["image_id"]) == (
        "pending",
        "upload",
        None,
    )
    assert state_of(reports, "https://a.test/2.png")["image_id"] == "two"


def test_requeue_for_update_keeps_the_image_and_skips_rows_no_longer_done(
    reports: Reports,
) -> None:
    add_row(reports, "https://a.test/1.png", State.DONE, image_id="cf-1")
    add_row(reports, "https://a.test/2.png", State.CLAIMED, image_id="cf-2")
    ids = [
        state_of(reports, source)["id"]
        for source in ("https://a.test/1.png", "https://a.test/2.png")
    ]

    assert reports.requeue_done(ids, Action.UPDATE) == 1

    updated = state_of(reports, "https://a.test/1.png")
    assert (updated["action"], updated["image_id"]) == ("update", "cf-1")
    assert state_of(reports, "https://a.test/2.png")["state"] == "claimed"


def test_plan_counts_rows_by_what_a_run_would_do(reports: Reports) -> None:
    add_row(reports, "https://a.test/1.png", State.PENDING)
    add_row(reports, "https://a.test/2.png", State.PENDING, in_doubt=True)
    add_row(reports, "https://a.test/3.png", State.PENDING, action="update")
    add_row(reports, "https://a.test/4.png", State.DONE)
    add_row(reports, "https://a.test/5.png", State.FAILED)
    add_row(reports, "https://a.test/6.png", State.CLAIMED)

    plan = reports.plan_counts()
    updates = reports.rows_in(State.PENDING, RowFilter(actions=("update",)))

    assert (plan.upload, plan.update, plan.in_doubt) == (2, 1, 1)
    assert (plan.done, plan.failed, plan.claimed) == (1, 1, 1)
    assert [row.source for row in updates] == ["https://a.test/3.png"]


def test_the_mapping_reads_done_rows_only_in_id_order(
    reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("migrator.store.reports.PAGE_ROWS", 2)
    uploaded = utcnow()
    for n in range(5):
        add_row(
            reports,
            f"https://a.test/{n}.png",
            State.DONE,
            image_id=f"cf-{n}",
            variants=json.dumps([f"https://imagedelivery.net/h/cf-{n}/public"]),
            uploaded_at=uploaded,
        )
    add_row(reports, "https://a.test/failed.png", State.FAILED)

    mapping = list(reports.mapping())

    assert [row.image_id for row in mapping] == [f"cf-{n}" for n in range(5)]
    assert mapping[0].variants == ["https://imagedelivery.net/h/cf-0/public"]
    assert mapping[0].uploaded_at is not None
