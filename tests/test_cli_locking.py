"""One writer per SQLite job table: what the run lock refuses and what it frees."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.emulator import Emulator
from migrator.errors import ExitCode
from migrator.lock import TableLock
from migrator.store import JobStore, State
from tests.fixtures.cli import invoke
from tests.fixtures.emulator import LocalOrigin


def write_manifest(path: Path, urls: list[str]) -> Path:
    path.write_text("".join(url + "\n" for url in urls))
    return path


def test_load_is_refused_while_a_run_holds_the_table(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    manifest = write_manifest(tmp_path / "urls.txt", ["http://127.0.0.1/a.png"])

    with TableLock(db):
        outcome = invoke("load", str(manifest), "--db", str(db))

    assert outcome.exit_code == ExitCode.LOCKED
    assert "another migrator run holds this job table" in outcome.stderr


def test_retry_is_refused_while_a_run_holds_the_table(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    JobStore.open(str(db)).close()

    with TableLock(db):
        outcome = invoke("retry", "--db", str(db))

    assert outcome.exit_code == ExitCode.LOCKED


def test_status_reads_while_a_run_holds_the_table(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    JobStore.open(str(db)).close()

    with TableLock(db):
        outcome = invoke("status", "--db", str(db))

    assert outcome.exit_code == ExitCode.OK


def test_a_run_settles_a_killed_runs_claims_without_waiting_for_leases(
    emulator: Emulator,
    origin: LocalOrigin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = str(tmp_path / "jobs.db")
    manifest = write_manifest(
        tmp_path / "urls.txt", [origin.synthetic(8, 8 + n) for n in range(6)]
    )
    loaded = invoke("load", str(manifest), "--db", db, "--id-from", "path")
    assert loaded.exit_code == ExitCode.OK
    store = JobStore.open(db)
    # A run that died holding leases good for an hour; with custom IDs its
    # rows can be taken over at once (a second upload of an ID meets 5409).
    held = store.claim("killed-run", 3, lease=3600)
    store.close()
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", emulator.api_token)

    outcome = invoke(
        "run",
        "--db",
        db,
        "--api-url",
        emulator.main_url,
        "--batch-url",
        emulator.batch_url,
        "--account-id",
        emulator.account_id,
        "--workers",
        "2",
    )

    assert outcome.exit_code == ExitCode.OK, outcome.stderr
    assert "claimed by a run that stopped" in outcome.stderr
    assert len(held) == 3
    store = JobStore.open(db)
    assert store.status().states[State.DONE] == 6
    store.close()
    assert emulator.stats()["images"] == 6
