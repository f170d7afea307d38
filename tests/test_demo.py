"""The offline demo, run as a user runs it: a subprocess from a clean folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from migrator.store import JobStore, State

EXPECTED_FAILURES = {
    "5400": 2,  # a dead link on the origin, a banner 13,000 px wide
    "5413": 1,  # an 11 MB poster
    "5455": 3,  # a TIFF by URL, a BMP by URL, a TIFF file
}


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migrator", "demo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_the_demo_migrates_the_samples_and_shows_their_bad_rows(
    tmp_path: Path,
) -> None:
    work = tmp_path / "demo"

    demo = run_demo("--dir", str(work), cwd=tmp_path)

    assert demo.returncode == 0, demo.stderr
    assert demo.stderr.count(": id: must not be a UUID") == 1
    assert "6 rejected" in demo.stderr
    assert "34 uploaded" in demo.stderr
    assert f"The job table is {work / 'demo.db'}" in demo.stdout
    assert "migrator failures --format csv" in demo.stdout

    store = JobStore.open(str(work / "demo.db"))
    try:
        assert store.count_in(State.DONE) == 34
        codes: dict[str, int] = {}
        for row in store.rows_in(State.FAILED):
            codes[row.error_code or ""] = codes.get(row.error_code or "", 0) + 1
    finally:
        store.close()
    assert codes == EXPECTED_FAILURES
    assert not list(tmp_path.glob("*.db"))


def test_the_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    demo = run_demo("--dir", str(tmp_path), cwd=tmp_path)

    assert demo.returncode == 2
    assert "not an empty folder" in demo.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
