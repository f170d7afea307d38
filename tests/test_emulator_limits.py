"""The emulator's rate limits and fault injection."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from migrator.emulator import Emulator, Faults, RateLimit, Settings
from tests.fixtures.emulator import BatchClient, LocalOrigin


def send_paced(
    client: httpx.Client, path: str, rate: float, seconds: float
) -> tuple[Counter[int], float]:
    """GET ``path`` at ``rate`` requests a second for ``seconds``, from 8 threads;
    return the statuses and the seconds it really took."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    start = time.monotonic() + 0.05
    total = int(rate * seconds)

    def worker(offset: int) -> None:
        for index in range(offset, total, 8):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            status = client.get(path).status_code
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, time.monotonic() - start


@pytest.mark.slow
def test_a_batch_token_sending_400_a_second_sees_about_half_refused(
    batch: BatchClient,
) -> None:
    statuses, elapsed = send_paced(batch.http, "/images/v1/absent", 400, 2)

    sent = sum(statuses.values())
    accepted = statuses[404]
    assert statuses[404] + statuses[429] == sent
    assert batch.emulator.stats()["throttled"] == statuses[429]
    # At most 200 in any second; and, however slow a busy machine makes the
    # sender, no fewer than it sent within the limit.
    assert accepted <= 200 * (elapsed + 1)
    assert accepted >= 0.9 * min(sent, 200 * elapsed)
    if sent / elapsed >= 380:
        assert 0.35 <= statuses[429] / sent <= 0.6, statuses


def test_throttled_batch_requests_carry_retry_after(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(Settings(batch_rate=RateLimit(3, 1.0)))
    headers = {"Authorization": f"Bearer {emulator.batch_token()}"}

    answers = [
        httpx.get(f"{emulator.batch_url}/images/v2", headers=headers) for _ in range(4)
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert answers[3].headers["Retry-After"] == "1"
    assert answers[3].json()["success"] is False


def test_each_batch_token_has_its_own_limit(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(Settings(batch_rate=RateLimit(2, 10.0)))
    tokens = [emulator.batch_token(), emulator.batch_token()]

    statuses = [
        httpx.get(
            f"{emulator.batch_url}/images/v2", headers={"Authorization": f"Bearer {t}"}
        ).status_code
        for t in tokens * 3
    ]

    assert statuses == [200, 200, 200, 200, 429, 429]


def test_an_api_token_over_its_limit_is_blocked_for_the_whole_block(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(Settings(api_rate=RateLimit(3, 60.0, block=1.0)))
    url = f"{emulator.main_url}/accounts/{emulator.account_id}/images/v1/stats"
    headers = {"Authorization": f"Bearer {emulator.api_token}"}

    answers = [httpx.get(url, headers=headers) for _ in range(5)]
    time.sleep(1.1)
    after_block = httpx.get(url, headers=headers)

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
    assert [answer.headers["Ratelimit"] for answer in answers[:3]] == [
        '"default";r=2;t=60',
        '"default";r=1;t=60',
        '"default";r=0;t=60',
    ]
    assert answers[0].headers["Ratelimit-Policy"] == '"default";q=3;w=60'
    assert answers[3].headers["Retry-After"] == "1"
    assert after_block.status_code == 200


def test_one_address_may_make_only_so_many_main_api_calls_a_second(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(
        Settings(api_tokens=("a", "b"), address_rate=RateLimit(3, 1.0))
    )
    url = f"{emulator.main_url}/accounts/{emulator.account_id}/images/v1/stats"

    statuses = [
        httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code
        for token in ("a", "b", "a", "b")
    ]

    assert statuses == [200, 200, 200, 429]


def test_batch_host_requests_do_not_count_against_the_api_token(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(Settings(api_rate=RateLimit(2, 60.0, block=60.0)))
    headers = {"Authorization": f"Bearer {emulator.batch_token()}"}

    for _ in range(5):
        httpx.get(f"{emulator.batch_url}/images/v2", headers=headers)
    url = f"{emulator.main_url}/accounts/{emulator.account_id}/images/v1/stats"
    response = httpx.get(url, headers={"Authorization": f"Bearer {emulator.api_token}"})

    assert response.status_code == 200
    assert response.headers["Ratelimit"].startswith('"default";r=0;')


def test_server_error_faults_answer_5500_or_5503(
    emulator: Emulator, batch: BatchClient
) -> None:
    emulator.set_faults(error_rate=1, seed=3)

    answers = [batch.get("/images/v2") for _ in range(20)]

    pairs = {(a.status_code, a.json()["errors"][0]["code"]) for a in answers}
    assert pairs == {(500, 5500), (503, 5503)}
    assert emulator.stats()["faults"] == {"server_error": 20}


def test_the_same_seed_draws_the_same_faults(
    emulator: Emulator, batch: BatchClient
) -> None:
    def draw() -> list[int]:
        emulator.set_faults(error_rate=0.5, seed=42)
        return [batch.get("/images/v2").status_code for _ in range(30)]

    first = draw()

    assert draw() == first
    assert 200 in first
    assert set(first) - {200} <= {500, 503}


def test_throttle_and_storm_faults_answer_429_with_retry_after(
    emulator: Emulator, batch: BatchClient
) -> None:
    emulator.set_faults(throttle_rate=1)
    single = batch.get("/images/v2")
    emulator.set_faults(storm_rate=1, storm_seconds=30)
    storm = [batch.get("/images/v2") for _ in range(3)]

    assert single.status_code == 429
    assert single.headers["Retry-After"] == "1"
    assert [answer.status_code for answer in storm] == [429, 429, 429]
    assert storm[0].headers["Retry-After"] == "30"
    assert int(storm[2].headers["Retry-After"]) <= 30


def test_latency_fault_delays_every_answer(
    emulator: Emulator, batch: BatchClient
) -> None:
    emulator.set_faults(latency=0.2, latency_jitter=0.1)

    started = time.monotonic()
    response = batch.get("/images/v2")

    assert response.status_code == 200
    assert 0.2 <= time.monotonic() - started < 1.5


def test_dropped_answer_leaves_the_upload_stored(
    emulator: Emulator, batch: BatchClient, origin: LocalOrigin
) -> None:
    emulator.set_faults(drop_rate=1)

    with pytest.raises(httpx.RemoteProtocolError):
        batch.upload(url=origin.synthetic(4, 4), id="in-doubt")
    emulator.set_faults()

    assert batch.get("/images/v1/in-doubt").status_code == 200
    assert emulator.stats()["faults"] == {"drop": 1}


def test_lost_request_is_cut_off_the_same_way_and_stores_nothing(
    emulator: Emulator, batch: BatchClient, origin: LocalOrigin
) -> None:
    emulator.set_faults(lose_rate=1)

    with pytest.raises(httpx.RemoteProtocolError):
        batch.upload(url=origin.synthetic(4, 4), id="never")
    emulator.set_faults()

    assert batch.get("/images/v1/never").status_code == 404
    assert emulator.stats()["faults"] == {"lose": 1}


def test_slow_answers_trip_a_short_read_timeout(
    emulator: Emulator, batch: BatchClient
) -> None:
    emulator.set_faults(slow_rate=1, slow_seconds=1.0)

    with pytest.raises(httpx.ReadTimeout):
        batch.http.get("/images/v2", timeout=httpx.Timeout(5, read=0.3))
    started = time.monotonic()
    whole = batch.get("/images/v2")

    assert whole.status_code == 200
    assert whole.json()["success"] is True
    assert time.monotonic() - started >= 0.9


def test_early_expiry_refuses_the_token_from_then_on(
    emulator: Emulator, batch: BatchClient
) -> None:
    emulator.set_faults(expire_rate=1)
    expired = batch.get("/images/v2")
    emulator.set_faults()
    still = batch.get("/images/v2")
    fresh = httpx.get(
        f"{emulator.batch_url}/images/v2",
        headers={"Authorization": f"Bearer {emulator.batch_token()}"},
    )

    assert expired.status_code == 401
    assert expired.json()["errors"][0]["code"] == 10000
    assert still.status_code == 401
    assert fresh.status_code == 200


def test_faults_never_touch_the_control_routes(emulator: Emulator) -> None:
    emulator.set_faults(error_rate=1, drop_rate=1)

    assert emulator.stats()["requests_total"] == 0
    assert httpx.get(f"{emulator.base_url}/_emulator/faults").json()["error_rate"] == 1


def test_faults_set_at_start_come_back_after_a_reset(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(faults=Faults.parse("throttle_rate=1,seed=1"))
    emulator.set_faults()

    emulator.reset()

    assert (
        httpx.get(f"{emulator.base_url}/_emulator/faults").json()["throttle_rate"] == 1
    )


def test_fault_specs_are_checked() -> None:
    assert Faults.parse("error-rate=0.5, seed=2") == Faults(error_rate=0.5, seed=2)
    with pytest.raises(ValueError, match="out of range"):
        Faults.parse("drop_rate=2")
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.parse("bogus=1")


def test_bad_faults_posted_at_run_time_are_refused(emulator: Emulator) -> None:
    response = httpx.post(f"{emulator.base_url}/_emulator/faults", json={"x": 1})

    assert response.status_code == 400
    assert "unknown fault" in response.json()["error"]
