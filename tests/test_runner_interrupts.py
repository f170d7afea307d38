"""``migrator run`` as a process: interrupted by SIGINT, killed by SIGKILL, resumed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrator.emulator import Emulator
from migrator.store import JobStore
from tests.fixtures.emulator import LocalOrigin
from tests.fixtures.runner import add_rows, images_per_key, rows, states

pytestmark = pytest.mark.slow


def start_run(emulator: Emulator, db: Path, *options: str) -> subprocess.Popen[bytes]:
    """Start ``migrator run`` on ``db`` against ``emulator`` in a new process."""
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": emulator.account_id,
        "CLOUDFLARE_API_TOKEN": emulator.api_token,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "migrator",
            "-q",
            "run",
            "--db",
            str(db),
            "--api-url",
            emulator.main_url,
            "--batch-url",
            emulator.batch_url,
            "--workers",
            "8",
            "--lease",
            "2",
            *options,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def load(db: Path, origin: LocalOrigin, count: int) -> None:
    """Put ``count`` rows in a new job table, every fourth with a custom ID."""
    store = JobStore.open(str(db))
    add_rows(
        store,
        [
            {
                "source": origin.synthetic(4 + n % 50, 4 + n // 50, delay=0.05),
                "custom_id": f"c/{n}" if n % 4 == 0 else None,
            }
            for n in range(count)
        ],
    )
    store.close()


def table_states(db: Path) -> dict[str, int]:
    store = JobStore.open(str(db))
    try:
        return states(store)
    finally:
        store.close()


def assert_exactly_one_image_per_row(db: Path, emulator: Emulator) -> None:
    store = JobStore.open(str(db))
    try:
        table = rows(store)
    finally:
        store.close()
    assert {row.state for row in table} == {"done"}
    per_key = images_per_key(emulator)
    assert len(per_key) == len(table)
    assert set(per_key.values()) == {1}


def test_sigint_finishes_in_flight_work_and_leaves_nothing_claimed(
    emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    db = tmp_path / "jobs.db"
    load(db, origin, 500)
    process = start_run(emulator, db)
    deadline = time.monotonic() + 60
    while table_states(db).get("done", 0) < 30 and time.monotonic() < deadline:
        time.sleep(0.1)

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr.decode()
    after = table_states(db)
    assert "claimed" not in after
    assert after.get("pending", 0) > 0
    assert len(images_per_key(emulator)) == after["done"]

    resumed = start_run(emulator, db)
    resumed.communicate(timeout=120)
    assert resumed.returncode == 0
    assert_exactly_one_image_per_row(db, emulator)


def test_runs_killed_at_random_moments_resume_to_exactly_one_image_per_row(
    emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    db = tmp_path / "jobs.db"
    load(db, origin, 500)
    chance = random.Random(os.environ.get("PYTEST_SEED", "kill"))

    for _ in range(4):
        process = start_run(emulator, db)
        time.sleep(chance.uniform(1.0, 3.0))
        process.kill()
        process.wait(timeout=30)

    final = start_run(emulator, db)
    _, stderr = final.communicate(timeout=180)
    assert final.returncode == 0, stderr.decode()
    assert_exactly_one_image_per_row(db, emulator)
    # The kills did leave rows in doubt, and they were settled by looking up.
    routes = emulator.stats()["requests"]
    assert "batch GET /images/v2" in routes
    assert "batch GET /images/v1/{image_id}" in routes


def test_a_second_sigint_quits_at_once_and_the_next_run_finishes(
    emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    db = tmp_path / "jobs.db"
    load(db, origin, 300)
    process = start_run(emulator, db, "--lease", "1")
    deadline = time.monotonic() + 60
    while table_states(db).get("done", 0) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)

    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr.decode()
    resumed = start_run(emulator, db, "--lease", "1")
    resumed.communicate(timeout=120)
    assert resumed.returncode == 0
    assert_exactly_one_image_per_row(db, emulator)
