"""The runner against the emulator: uploads, settling, updates, stops and faults."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from migrator.client import ImageFields, ImagesClient
from migrator.emulator import Emulator, Settings
from migrator.emulator.origin import make_image
from migrator.errors import AccountStoppedError, AuthError, CircuitOpenError, ExitCode
from migrator.manifest import migration_key
from migrator.runner import Progress, Runner, RunSettings, RunSummary
from migrator.store import JobStore
from migrator.tokens import Secret
from tests.fixtures.emulator import LocalOrigin
from tests.fixtures.runner import (
    add_rows,
    client_config,
    client_for,
    images_per_key,
    rows,
    states,
    stored_images,
)

FAST = RunSettings(
    workers=8,
    backoff_base=0.05,
    backoff_cap=0.3,
    settle_delay=0.3,
    idle_poll=0.05,
    handle_signals=False,
)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = JobStore.open(str(tmp_path / "jobs.db"))
    yield opened
    opened.close()


def run(store: JobStore, emulator: Emulator, **options: Any) -> RunSummary:
    client_options = {
        key: options.pop(key) for key in ("tokens", "rate") if key in options
    }
    settings = dataclasses.replace(FAST, **options)
    with client_for(emulator, **client_options) as client:
        return Runner(store, client, settings).run()


def test_every_pending_row_is_uploaded_once(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(store, [{"source": origin.synthetic(10 + n, 10)} for n in range(40)])
    add_rows(store, [{"source": origin.synthetic(9, 9), "custom_id": "a/b c.png"}])

    summary = run(store, emulator)

    assert summary.exit_code is ExitCode.OK
    assert summary.counts["done"] == 41
    assert states(store) == {"done": 41}
    assert len(stored_images(emulator)) == 41
    assert all(row.image_id and row.variants for row in rows(store))
    assert "a/b c.png" in {image.id for image in stored_images(emulator)}


@pytest.mark.postgres
def test_a_postgresql_job_table_is_drained_the_same_way(
    postgres_url: str, emulator: Emulator, origin: LocalOrigin
) -> None:
    shared = JobStore.open(postgres_url)
    try:
        add_rows(shared, [{"source": origin.synthetic(6, 5 + n)} for n in range(20)])
        add_rows(shared, [{"source": origin.synthetic(9, 9), "custom_id": "pg"}])

        summary = run(shared, emulator)

        assert summary.counts["done"] == 21
        assert states(shared) == {"done": 21}
    finally:
        shared.close()
    assert len(stored_images(emulator)) == 21


@pytest.mark.postgres
def test_two_runs_share_one_postgresql_table_without_overlap(
    postgres_url: str, emulator: Emulator, origin: LocalOrigin
) -> None:
    first, second = JobStore.open(postgres_url), JobStore.open(postgres_url)
    add_rows(
        first, [{"source": origin.synthetic(5, 5 + n, delay=0.02)} for n in range(120)]
    )
    summaries: list[RunSummary] = []

    def drain(store: JobStore) -> None:
        summaries.append(run(store, emulator, claim_batch=10))

    threads = [threading.Thread(target=drain, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    table = states(first)
    first.close()
    second.close()

    assert table == {"done": 120}
    assert all(summary.counts["done"] > 0 for summary in summaries)
    assert sum(summary.counts["done"] for summary in summaries) == 120
    assert set(images_per_key(emulator).values()) == {1}


def test_images_without_custom_id_carry_their_migration_key(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(store, [{"source": origin.synthetic(5, 5), "metadata": {"a": 1}}])

    run(store, emulator)

    (image,) = stored_images(emulator)
    key = migration_key(f"source:{origin.synthetic(5, 5)}")
    assert image.meta == {"a": 1, "migrator_key": key}


def test_local_files_are_uploaded_with_their_content_type(
    store: JobStore, emulator: Emulator, tmp_path: Path
) -> None:
    for fmt in ("png", "jpg", "gif", "webp", "svg"):
        (tmp_path / f"picture-{fmt}").write_bytes(make_image(8, 6, fmt))
    add_rows(store, [{"source": str(path)} for path in tmp_path.glob("picture-*")])

    summary = run(store, emulator)

    assert summary.counts["done"] == 5
    assert sorted(image.format for image in stored_images(emulator)) == sorted(
        ["png", "jpeg", "gif", "webp", "svg"]
    )


def test_fetch_local_downloads_and_uploads_the_bytes(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(store, [{"source": origin.synthetic(7, 7, "webp")}])

    summary = run(store, emulator, fetch_local=True)

    assert summary.counts["done"] == 1
    assert origin.synthetic(7, 7, "webp") not in str(emulator.stats())
    assert stored_images(emulator)[0].format == "webp"


def test_permanent_errors_fail_at_once_without_retries(
    store: JobStore, emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    add_rows(
        store,
        [
            {"source": origin.file("notes.txt")},
            {"source": origin.synthetic(10, 10, size=11 * 1024 * 1024)},
            {"source": origin.dead()},
            {"source": str(tmp_path / "missing.png")},
            {"source": str(tmp_path / "notes.txt")},
        ],
    )

    summary = run(store, emulator)

    assert summary.exit_code is ExitCode.FAILURES
    assert summary.counts["failed"] == 5
    assert summary.counts["retried"] == 0
    failed = rows(store)
    assert [row.attempts for row in failed] == [1] * 5
    assert failed[3].error_code == "file-unreadable"
    assert all(row.error_code and row.error_message for row in failed)
    assert stored_images(emulator) == []


def test_an_existing_custom_id_is_confirmed_not_uploaded_again(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    with client_for(emulator) as client:
        client.upload_url(origin.synthetic(5, 5), ImageFields(custom_id="kept"))
    add_rows(store, [{"source": origin.synthetic(5, 5), "custom_id": "kept"}])

    summary = run(store, emulator)

    assert summary.counts["done"] == 1
    assert rows(store)[0].state == "done"
    assert len(stored_images(emulator)) == 1


def test_an_in_doubt_row_finds_the_image_its_earlier_attempt_stored(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    source = origin.synthetic(6, 6)
    key = migration_key(f"source:{source}")
    with client_for(emulator) as client:
        earlier = client.upload_url(source, ImageFields(metadata={"migrator_key": key}))
    add_rows(store, [{"source": source, "in_doubt": True}])

    summary = run(store, emulator)

    assert summary.counts["done"] == 1
    assert rows(store)[0].image_id == earlier.id
    assert len(stored_images(emulator)) == 1


def test_an_in_doubt_row_whose_upload_never_landed_is_uploaded(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(
        store,
        [
            {"source": origin.synthetic(6, 6), "in_doubt": True},
            {"source": origin.synthetic(7, 7), "custom_id": "c", "in_doubt": True},
        ],
    )

    summary = run(store, emulator)

    assert summary.counts["done"] == 2
    assert len(stored_images(emulator)) == 2


def test_a_changed_row_is_patched_not_uploaded_again(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    with client_for(emulator) as client:
        image = client.upload_url(origin.synthetic(5, 5), ImageFields(custom_id="p"))
    add_rows(
        store,
        [
            {
                "source": origin.synthetic(5, 5),
                "custom_id": "p",
                "image_id": image.id,
                "metadata": {"album": "new"},
                "creator": "me",
                "action": "update",
            }
        ],
    )

    summary = run(store, emulator)

    assert summary.counts["updated"] == 1
    (stored,) = stored_images(emulator)
    assert stored.meta == {"album": "new"}
    assert stored.creator == "me"
    assert emulator.stats()["uploads"]["attempted"] == 1


def test_max_items_stops_with_more_work_remaining(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(store, [{"source": origin.synthetic(5, 5 + n)} for n in range(30)])

    summary = run(store, emulator, max_items=10)

    assert summary.exit_reason == "max-items"
    assert summary.exit_code is ExitCode.MORE_WORK
    assert "more work remains" in summary.line()
    assert states(store) == {"done": 10, "pending": 20}


def test_max_duration_stops_cleanly_with_nothing_claimed(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(
        store, [{"source": origin.synthetic(5, 5 + n, delay=0.2)} for n in range(200)]
    )

    summary = run(store, emulator, max_duration=0.5)

    assert summary.exit_code is ExitCode.MORE_WORK
    assert "claimed" not in states(store)
    assert summary.remaining == states(store)["pending"]
    assert len(stored_images(emulator)) == states(store)["done"]


def test_a_refused_api_token_stops_the_run_and_keeps_rows_pending(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(store, [{"source": origin.synthetic(5, 5 + n)} for n in range(20)])
    config = dataclasses.replace(client_config(emulator), api_token=Secret("wrong"))

    with ImagesClient(config) as client:
        summary = Runner(store, client, FAST).run()

    assert isinstance(summary.error, AuthError)
    assert summary.exit_code is ExitCode.FATAL
    assert states(store) == {"pending": 20}
    assert all(row.attempts == 0 for row in rows(store))


def test_a_full_account_stops_the_run(
    store: JobStore, make_emulator: Any, tmp_path: Path
) -> None:
    emulator = make_emulator(Settings(quota=3))
    for n in range(10):
        (tmp_path / f"{n}.png").write_bytes(make_image(4, 4 + n, "png"))
    add_rows(store, [{"source": str(tmp_path / f"{n}.png")} for n in range(10)])

    summary = run(store, emulator, workers=1)

    assert isinstance(summary.error, AccountStoppedError)
    assert summary.exit_reason == "quota"
    assert states(store) == {"done": 3, "pending": 7}


def test_the_circuit_breaker_stops_a_run_that_only_fails(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(store, [{"source": origin.dead(f"{n}.jpg")} for n in range(200)])

    summary = run(store, emulator, breaker_window=20)

    assert isinstance(summary.error, CircuitOpenError)
    assert summary.exit_code is ExitCode.FATAL
    assert states(store)["pending"] > 100


def test_a_slow_upload_keeps_its_lease(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(store, [{"source": origin.synthetic(5, 5, delay=2.0)}])

    summary = run(store, emulator, lease=0.8)

    assert summary.counts["done"] == 1
    assert rows(store)[0].attempts == 1
    assert emulator.stats()["uploads"]["attempted"] == 1


def test_progress_is_reported_to_the_callback(
    store: JobStore, emulator: Emulator, origin: LocalOrigin
) -> None:
    add_rows(store, [{"source": origin.synthetic(5, 5 + n)} for n in range(5)])
    seen: list[Progress] = []

    run(store, emulator, progress=seen.append, progress_interval=0.0)

    assert seen[0].total == 5
    assert seen[-1].done == 5


def test_no_token_reaches_the_job_table_or_the_log(
    store: JobStore,
    make_emulator: Any,
    origin: LocalOrigin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = make_emulator(Settings(batch_token_ttl=1.5))
    add_rows(
        store, [{"source": origin.synthetic(5, 5 + n, delay=0.4)} for n in range(60)]
    )
    add_rows(store, [{"source": origin.dead()}])
    emulator.set_faults(error_rate=0.1, drop_rate=0.05, seed=5)

    with client_for(emulator) as client:
        summary = Runner(
            store, client, dataclasses.replace(FAST, max_attempts=12)
        ).run()
        batch_token = client.tokens.get(0).secret.reveal()

    table = "\n".join(repr(tuple(row)) for row in rows(store))
    everything = caplog.text + table + repr(summary) + summary.line()
    assert summary.counts["done"] == 60
    assert client.tokens.fetches > 1
    assert batch_token not in everything
    assert emulator.api_token not in everything


@pytest.mark.slow
def test_thousands_of_rows_survive_every_fault(
    store: JobStore, make_emulator: Any, origin: LocalOrigin
) -> None:
    # Batch tokens live three seconds: several expire and are renewed mid-run.
    emulator = make_emulator(Settings(batch_token_ttl=3))
    emulator.set_faults(
        error_rate=0.05,
        drop_rate=0.03,
        storm_rate=0.0005,
        storm_seconds=1.0,
        latency=0.002,
        latency_jitter=0.02,
        seed=7,
    )
    add_rows(
        store,
        [{"source": origin.synthetic(4 + n % 60, 4 + n // 60)} for n in range(2000)],
    )
    add_rows(store, [{"source": origin.dead(f"{n}.png")} for n in range(10)])
    add_rows(
        store,
        [{"source": origin.synthetic(5, 5), "custom_id": f"c/{n}"} for n in range(500)],
    )

    summary = run(store, emulator, workers=16, max_attempts=10)

    table = rows(store)
    done = [row for row in table if row.state == "done"]
    failed = [row for row in table if row.state == "failed"]
    assert len(done) == 2500
    assert {row.source for row in failed} == {
        origin.dead(f"{n}.png") for n in range(10)
    }
    assert all(row.http_status is not None for row in failed)
    assert all(row.http_status < 500 for row in failed)
    per_key = images_per_key(emulator)
    assert len(per_key) == 2500
    assert set(per_key.values()) == {1}
    assert {row.image_id for row in done} == {i.id for i in stored_images(emulator)}
    assert summary.throttled > 0
    assert emulator.stats()["batch_tokens_issued"] >= 3
