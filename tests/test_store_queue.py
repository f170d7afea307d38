"""The job table as a queue: claims, leases, fenced outcomes, release."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, insert, select

from migrator.store import (
    Completed,
    Failed,
    JobStore,
    Released,
    Retried,
    State,
    utcnow,
)
from migrator.store.schema import images


def add_pending(store: JobStore, count: int, first: int = 0) -> None:
    """Put ``count`` fresh URL rows in the table, as a load would."""
    now = utcnow()
    rows = [
        {
            "key": f"source:http://127.0.0.1/{n}.png",
            "source": f"http://127.0.0.1/{n}.png",
            "source_kind": "url",
            "require_signed_urls": False,
            "state": "pending",
            "action": "upload",
            "attempts": 0,
            "next_attempt_at": now,
            "in_doubt": False,
            "content_hash": "test",
            "created_at": now,
            "updated_at": now,
        }
        for n in range(first, first + count)
    ]
    with store.transaction() as connection:
        connection.execute(insert(images), rows)


def states(store: JobStore) -> dict[str, int]:
    with store.reading() as connection:
        query = select(images.c.state, func.count()).group_by(images.c.state)
        return {state: count for state, count in connection.execute(query)}


@pytest.fixture
def queue(store_url: str) -> Iterator[JobStore]:
    store = JobStore.open(store_url)
    add_pending(store, 10)
    yield store
    store.close()


def test_claim_leases_each_row_to_one_owner(queue: JobStore) -> None:
    first = queue.claim("a", 6, lease=60)
    second = queue.claim("b", 6, lease=60)

    assert len(first) == 6
    assert len(second) == 4
    assert not {c.row_id for c in first} & {c.row_id for c in second}
    assert all(c.attempt == 1 and not c.in_doubt for c in first + second)
    assert queue.claim("c", 6, lease=60) == []


def test_concurrent_claims_never_share_a_row(queue: JobStore) -> None:
    add_pending(queue, 190, first=10)
    seen: list[int] = []
    lock = threading.Lock()

    def drain(owner: str) -> None:
        while claims := queue.claim(owner, 7, lease=60):
            with lock:
                seen.extend(c.row_id for c in claims)

    threads = [threading.Thread(target=drain, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(seen) == len(set(seen)) == 200


def test_completed_row_is_done_with_its_image(queue: JobStore) -> None:
    (claim,) = queue.claim("a", 1, lease=60)

    applied = queue.record(
        [Completed(claim.row_id, claim.attempt, "a", "cf-1", ["https://v/1"], None)]
    )

    assert applied == 1
    assert states(queue) == {"done": 1, "pending": 9}
    assert queue.claimed_by("a") == 0


def test_outcome_from_a_stale_attempt_is_dropped(queue: JobStore) -> None:
    (stale,) = queue.claim("a", 1, lease=-1)  # the lease is over at once
    (fresh,) = queue.claim("b", 1, lease=60)
    assert fresh.row_id == stale.row_id
    assert fresh.attempt == 2
    assert fresh.in_doubt, "a claim whose lease ran out may have been sent"

    late = Failed(stale.row_id, stale.attempt, "a", "5500", "late", 500)
    assert queue.record([late]) == 0
    assert queue.record([Completed(fresh.row_id, 2, "b", "cf", [], None)]) == 1
    assert states(queue)["done"] == 1


def test_retried_row_waits_and_stays_in_doubt(queue: JobStore) -> None:
    (claim,) = queue.claim("a", 1, lease=60)
    later = utcnow() + dt.timedelta(hours=1)

    queue.record(
        [Retried(claim.row_id, 1, "a", None, "connection reset", None, later, True)]
    )

    assert claim.row_id not in {c.row_id for c in queue.claim("a", 100, lease=60)}
    with queue.reading() as connection:
        row = connection.execute(
            select(images).where(images.c.id == claim.row_id)
        ).one()
    assert row.in_doubt
    assert row.next_attempt_at == later
    assert row.error_message == "connection reset"


def test_released_claim_is_pending_and_uncounted(queue: JobStore) -> None:
    (claim,) = queue.claim("a", 1, lease=60)

    queue.record([Released(claim.row_id, claim.attempt, "a")])

    (again,) = [c for c in queue.claim("a", 10, lease=60) if c.row_id == claim.row_id]
    assert again.attempt == 1
    assert not again.in_doubt


def test_release_puts_every_claim_back_in_doubt(queue: JobStore) -> None:
    queue.claim("a", 3, lease=60)

    assert queue.release("a") == 3

    assert states(queue) == {"pending": 10}
    in_doubt = [c for c in queue.claim("b", 10, lease=60) if c.in_doubt]
    assert len(in_doubt) == 3


def test_renew_extends_only_the_owners_leases(queue: JobStore) -> None:
    held = queue.claim("a", 2, lease=-1)
    assert queue.renew("a", lease=60) == 2
    queue.claim("b", 2, lease=-1)

    reclaimed = queue.claim("c", 10, lease=60)

    assert len(reclaimed) == 8
    assert sum(c.in_doubt for c in reclaimed) == 2
    assert not {c.row_id for c in held} & {c.row_id for c in reclaimed}


def test_failed_row_keeps_code_message_and_status(queue: JobStore) -> None:
    (claim,) = queue.claim("a", 1, lease=60)

    queue.record([Failed(claim.row_id, 1, "a", "5455", "bad format", 415)])

    with queue.reading() as connection:
        row = connection.execute(
            select(images).where(images.c.id == claim.row_id)
        ).one()
    assert (row.state, row.error_code, row.http_status) == ("failed", "5455", 415)
    assert State(row.state) is State.FAILED


def test_runs_are_recorded_with_their_end(queue: JobStore) -> None:
    run_id = queue.start_run("a")

    queue.finish_run(run_id, "done", {"done": 3}, requests=4, throttled=1)

    assert run_id > 0


def test_release_abandoned_frees_every_owners_claims_in_doubt(
    queue: JobStore,
) -> None:
    queue.claim("dead-1", 2, lease=3600)
    queue.claim("dead-2", 3, lease=-1)

    assert queue.release_abandoned() == 5

    assert queue.claimed_by("dead-1") == queue.claimed_by("dead-2") == 0
    claims = queue.claim("next", 10, lease=60)
    assert len(claims) == 8, "dead-1's rows wait out their lease"
    assert sum(c.in_doubt for c in claims) == 3


def test_abandoned_rows_without_custom_id_wait_out_their_lease(
    queue: JobStore,
) -> None:
    # Cloudflare may still be storing a dead run's upload; settling it by its
    # migrator_key before then would not find it.
    held = queue.claim("dead", 3, lease=3600)

    queue.release_abandoned()

    claims = queue.claim("next", 10, lease=60)
    assert len(claims) == 7
    assert not {c.row_id for c in held} & {c.row_id for c in claims}


def test_a_batch_of_outcomes_counts_only_those_that_applied(queue: JobStore) -> None:
    first, second, third = queue.claim("a", 3, lease=60)
    done = Completed(first.row_id, 1, "a", "cf-1", [], None)
    stale = Failed(second.row_id, 7, "a", "5500", "from an old attempt", 500)
    wrong_owner = Released(third.row_id, 1, "b")

    assert queue.record([done, stale, wrong_owner, done]) == 1

    assert states(queue) == {"done": 1, "claimed": 2, "pending": 7}
