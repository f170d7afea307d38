"""Unattended runs: the lock, the summary file, caps and dry runs, as cron sees them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrator.emulator import Emulator
from migrator.errors import ExitCode
from tests.fixtures.cli import Outcome, invoke
from tests.fixtures.emulator import LocalOrigin


def credentials(emulator: Emulator) -> dict[str, str]:
    return {
        "CLOUDFLARE_ACCOUNT_ID": emulator.account_id,
        "CLOUDFLARE_API_TOKEN": emulator.api_token,
        "MIGRATOR_API_URL": emulator.main_url,
        "MIGRATOR_BATCH_URL": emulator.batch_url,
    }


def load(db: str, tmp_path: Path, urls: list[str]) -> None:
    manifest = tmp_path / "urls.txt"
    manifest.write_text("\n".join(urls) + "\n")
    assert invoke("load", "--db", db, str(manifest)).exit_code == 0


def run(db: str, emulator: Emulator, *args: str) -> Outcome:
    return invoke("run", "--db", db, "--workers", "4", *args, env=credentials(emulator))


def start_run(db: str, emulator: Emulator, *args: str) -> subprocess.Popen[str]:
    """Start ``migrator run`` as its own process; return once it holds the lock."""
    process = subprocess.Popen(
        [sys.executable, "-m", "migrator", "run", "--db", db, "--workers", "2", *args],
        env={**os.environ, **credentials(emulator)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = Path(db + ".lock")
    deadline = time.monotonic() + 30
    while str(process.pid) not in (lock.read_text() if lock.exists() else ""):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never took its lock"
        time.sleep(0.05)
    return process


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


@pytest.mark.slow
def test_a_second_run_on_the_same_table_is_refused_at_once(
    db: str, emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    load(
        db,
        tmp_path,
        [origin.synthetic(10, 10, name=f"s{n}", delay=1) for n in range(4)],
    )
    first = start_run(db, emulator)

    started = time.monotonic()
    second = run(db, emulator)
    refused_in = time.monotonic() - started
    _, first_stderr = first.communicate(timeout=60)

    assert second.exit_code == ExitCode.LOCKED
    assert "another migrator run holds this job table" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert refused_in < 2
    assert first.returncode == ExitCode.OK, first_stderr


@pytest.mark.slow
def test_a_run_killed_with_its_lock_held_does_not_block_the_next(
    db: str, emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    load(
        db,
        tmp_path,
        [origin.synthetic(10, 10, name=f"k{n}", delay=1) for n in range(4)],
    )
    killed = start_run(db, emulator, "--lease", "1s")
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)

    resumed = run(db, emulator, "--lease", "1s")

    assert resumed.exit_code == ExitCode.OK, resumed.stderr
    assert "0 remaining" in resumed.stderr


def test_the_summary_file_holds_the_runs_figures(
    db: str, emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    load(db, tmp_path, [origin.synthetic(10, 10, name="a"), origin.dead()])
    summary_file = tmp_path / "monitoring" / "last-run.json"

    result = run(db, emulator, "--summary-json", str(summary_file))

    assert result.exit_code == ExitCode.FAILURES
    summary = json.loads(summary_file.read_text())
    assert summary["exit_code"] == 1
    assert summary["exit_reason"] == "finished"
    assert summary["counts"]["done"] == 1
    assert summary["counts"]["failed"] == 1
    assert summary["job_table"].endswith("jobs.db")
    assert {"elapsed_s", "throughput_per_s", "error_codes", "finished_at"} <= set(
        summary
    )
    assert summary_file.stat().st_mode & 0o777 == 0o644


def test_a_run_stopped_at_its_item_cap_says_more_work_remains(
    db: str, emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    load(db, tmp_path, [origin.synthetic(10, 10, name=f"c{n}") for n in range(6)])
    summary_file = tmp_path / "last-run.json"

    capped = run(db, emulator, "--max-items", "2", "--summary-json", str(summary_file))

    assert capped.exit_code == ExitCode.MORE_WORK
    assert json.loads(summary_file.read_text())["remaining"] == 4
    assert run(db, emulator).exit_code == ExitCode.OK


def test_a_dry_run_needs_no_credentials_and_sends_nothing(
    db: str, emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    load(db, tmp_path, [origin.synthetic(10, 10, name=f"d{n}") for n in range(3)])

    dry = invoke("run", "--db", db, "--dry-run", env={"CLOUDFLARE_API_TOKEN": None})

    assert dry.exit_code == 0
    assert dry.stdout.splitlines()[0].split() == ["to", "upload", "3"]
    assert emulator.stats()["uploads"]["attempted"] == 0


def test_a_dry_run_with_manifests_asks_to_load_them_first(
    db: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "urls.txt"
    manifest.write_text("https://images.example.com/a.jpg\n")

    dry = invoke("run", "--db", db, "--dry-run", str(manifest))

    assert dry.exit_code == ExitCode.USAGE
    assert "migrator load" in dry.stderr
