"""Batch tokens: cached, renewed by one thread in time, replaced when refused."""

from __future__ import annotations

import threading
import time

import pytest

from migrator.errors import AuthError, TransientApiError
from migrator.tokens import IssuedToken, Secret, TokenPool


class Issuer:
    """Hands out numbered tokens, slowly if asked, and counts the calls."""

    def __init__(self, lifetime: float = 3600.0, delay: float = 0.0) -> None:
        self.lifetime = lifetime
        self.delay = delay
        self.calls = 0
        self.fail = False
        self.lock = threading.Lock()

    def __call__(self) -> IssuedToken:
        with self.lock:
            self.calls += 1
            number = self.calls
        time.sleep(self.delay)
        if self.fail:
            raise TransientApiError("batch token: down", code="5500", http_status=500)
        return IssuedToken(Secret(f"token-{number}"), self.lifetime)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_secret_never_shows_its_value() -> None:
    secret = Secret("hunter2-batch-jwt")

    shown = f"{secret} {secret!r} {[secret]} {IssuedToken(secret, 1.0)!r}"

    assert "hunter2" not in shown
    assert secret.reveal() == "hunter2-batch-jwt"


def test_threads_share_one_token_fetched_once() -> None:
    issuer = Issuer(delay=0.05)
    pool = TokenPool(issuer)
    seen: list[str] = []

    def use() -> None:
        seen.append(pool.get(0).secret.reveal())

    threads = [threading.Thread(target=use) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert issuer.calls == 1
    assert set(seen) == {"token-1"}


def test_one_thread_renews_before_expiry_while_the_others_keep_working() -> None:
    issuer = Issuer(lifetime=100.0)
    clock = Clock()
    pool = TokenPool(issuer, clock=clock)
    pool.get(0)
    clock.now = 85.0
    issuer.delay = 0.3
    renewed: list[str] = []

    renewer = threading.Thread(
        target=lambda: renewed.append(pool.get(0).secret.reveal())
    )
    renewer.start()
    time.sleep(0.05)
    started = time.monotonic()
    others = [pool.get(0).secret.reveal() for _ in range(20)]
    waited = time.monotonic() - started
    renewer.join()

    assert set(others) == {"token-1"}
    assert waited < 0.1
    assert renewed == ["token-2"]
    assert issuer.calls == 2


def test_an_expired_token_is_never_handed_out() -> None:
    issuer = Issuer(lifetime=100.0)
    clock = Clock()
    pool = TokenPool(issuer, clock=clock)
    pool.get(0)

    clock.now = 99.0

    assert pool.get(0).secret.reveal() == "token-2"


def test_a_refused_token_is_replaced_once_however_many_threads_saw_it() -> None:
    issuer = Issuer()
    pool = TokenPool(issuer)
    lease = pool.get(0)

    for _ in range(5):
        pool.invalidate(lease)
    first = pool.get(0)
    pool.invalidate(lease)

    assert first.secret.reveal() == "token-2"
    assert pool.get(0) == first
    assert issuer.calls == 2


def test_a_failed_early_renewal_keeps_the_current_token() -> None:
    issuer = Issuer(lifetime=100.0)
    clock = Clock()
    pool = TokenPool(issuer, clock=clock)
    pool.get(0)
    clock.now = 85.0
    issuer.fail = True

    assert pool.get(0).secret.reveal() == "token-1"
    assert pool.get(0).secret.reveal() == "token-1"
    assert issuer.calls == 2


def test_a_failed_first_fetch_raises() -> None:
    issuer = Issuer()
    issuer.fail = True
    pool = TokenPool(issuer)

    with pytest.raises(TransientApiError):
        pool.get(0)


def test_each_slot_has_its_own_token() -> None:
    pool = TokenPool(Issuer(), count=3)

    values = {pool.get(slot).secret.reveal() for slot in range(3)}

    assert len(values) == 3
    assert "token" not in repr(pool).replace("TokenPool", "")


def test_a_refused_api_token_is_not_asked_again() -> None:
    calls: list[int] = []

    def refuse() -> IssuedToken:
        calls.append(1)
        raise AuthError("batch token: refused", code="10000", http_status=401)

    pool = TokenPool(refuse, count=2)

    for slot in (0, 1, 0):
        with pytest.raises(AuthError):
            pool.get(slot)

    assert len(calls) == 1
