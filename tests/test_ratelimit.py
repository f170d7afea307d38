"""The limiter: even pacing per token slot, pauses on 429, recovery afterwards."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from migrator.ratelimit import (
    BURST_SPACING,
    HEADROOM,
    RECOVERY_PER_SECOND,
    SLOWDOWN,
    RateLimiter,
    WindowBudget,
)


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_requests_on_one_slot_are_spaced_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    start = clock.now

    for _ in range(101):
        limiter.acquire()

    assert clock.now - start == pytest.approx(100 / (100 * HEADROOM))


def test_two_slots_take_turns_and_double_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, 2, clock=clock, sleep=clock.sleep)

    slots = [limiter.acquire() for _ in range(200)]

    assert slots.count(0) == slots.count(1) == 100
    assert clock.now - 1000.0 == pytest.approx(99 / (100 * HEADROOM))


def test_a_429_pauses_everyone_then_the_rate_recovers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(200, 2, clock=clock, sleep=clock.sleep)

    limiter.throttle(retry_after=3.0)
    limiter.acquire()

    assert clock.now == pytest.approx(1003.0)
    assert limiter.current_rate() == pytest.approx(200 * HEADROOM * SLOWDOWN)
    clock.now += (1 - SLOWDOWN) / RECOVERY_PER_SECOND + 0.1
    assert limiter.current_rate() == pytest.approx(200 * HEADROOM)
    assert limiter.throttled == 1


def test_a_storm_of_429s_halves_the_rate_once_per_pause() -> None:
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)

    for _ in range(50):
        limiter.throttle(retry_after=1.0)

    clock.now += 1.0
    assert limiter.current_rate() == pytest.approx(200 * HEADROOM * SLOWDOWN)


def test_real_threads_stay_under_the_rate() -> None:
    limiter = RateLimiter(500)
    stamps: list[float] = []

    def send() -> None:
        for _ in range(25):
            limiter.acquire()
            stamps.append(time.monotonic())

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    elapsed = max(stamps) - min(stamps)
    assert len(stamps) / elapsed <= 500


def test_late_requests_catch_up_at_twice_the_rate_not_all_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    # Ten threads whose reserved moments have all passed reach admit together.
    for _ in range(10):
        limiter.admit(0)
        sent.append(clock.now)

    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert gaps == pytest.approx([BURST_SPACING / (100 * HEADROOM)] * 9)


def test_window_budget_waits_for_the_oldest_request_to_leave_the_window() -> None:
    clock = FakeClock()
    budget = WindowBudget(3, 10.0, clock=clock, sleep=clock.sleep)

    for _ in range(3):
        budget.acquire()
    assert clock.now == 1000.0
    budget.acquire()

    assert clock.now == pytest.approx(1010.0)


def test_window_budget_honours_a_429_pause() -> None:
    clock = FakeClock()
    budget = WindowBudget(100, 300.0, clock=clock, sleep=clock.sleep)

    budget.throttle(retry_after=30)
    budget.acquire()

    assert clock.now == pytest.approx(1030.0)


def test_no_second_ever_holds_more_sends_than_the_rate() -> None:
    limiter = RateLimiter(50)
    stamps: list[float] = []
    lock = threading.Lock()

    def send() -> None:
        for _ in range(10):
            limiter.admit(limiter.acquire())
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stamps.sort()
    busiest = max(
        sum(1 for other in stamps if start <= other < start + 1.0) for start in stamps
    )
    assert busiest <= int(50 * HEADROOM)
