"""Reading manifests in batches: in a child process for files, a thread for stdin."""

from __future__ import annotations

import io
import logging
import os
import signal
from pathlib import Path

import pytest

from migrator.errors import ManifestError
from migrator.manifest import STDIN, ManifestRow, RowError, read_manifest
from migrator.manifest.batches import RowBatch, batched, read_batches


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("url,id\n" + "".join(line + "\n" for line in lines))
    return path


def lines_of(batches: list[RowBatch]) -> list[ManifestRow | RowError]:
    """Every line of the batches, rows and errors, in manifest order."""
    items: list[ManifestRow | RowError] = []
    for batch in batches:
        items += batch.rows()
        items += batch.errors
    return sorted(items, key=lambda item: (item.manifest, item.line))


def test_a_child_reads_what_reading_in_process_reads(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "photos.csv",
        [f"https://x.test/{n}.jpg,photo-{n}" for n in range(25)]
        + ["ftp://x.test/a.jpg,a", "https://x.test/b.jpg,/b"],
    )

    batches = list(read_batches([str(path)], size=10))

    assert [len(batch) + len(batch.errors) for batch in batches] == [10, 10, 7]
    assert lines_of(batches) == list(read_manifest(str(path)))


def test_errors_come_in_line_order_across_manifests(tmp_path: Path) -> None:
    first = write_csv(tmp_path / "a.csv", ["nope,a", "https://x.test/1,b", "bad,c"])
    second = write_csv(tmp_path / "b.csv", ["https://x.test/2,", "worse,e"])

    batches = list(read_batches([str(first), str(second)], size=2))

    errors = [str(error) for batch in batches for error in batch.errors]
    assert [error.split(": ")[0] for error in errors] == [
        f"{first}:2",
        f"{first}:4",
        f"{second}:3",
    ]


def test_stdin_is_read_in_this_process(tmp_path: Path) -> None:
    stdin = io.BytesIO(b"https://x.test/1.jpg\nhttps://x.test/2.jpg\n")

    batches = list(read_batches([STDIN], stdin=stdin))

    assert [row.source for row in batches[0].rows()] == [
        "https://x.test/1.jpg",
        "https://x.test/2.jpg",
    ]


def test_a_manifest_that_cannot_be_opened_raises_in_the_parent(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing.csv"

    with pytest.raises(ManifestError, match="cannot open manifest"):
        list(read_batches([str(missing)]))


def test_warnings_of_the_child_are_logged_by_the_parent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "extra.csv"
    path.write_text("url,colour\nhttps://x.test/1.jpg,red\n")

    with caplog.at_level(logging.WARNING, logger="migrator"):
        list(read_batches([str(path)]))

    assert "ignoring unknown columns 'colour'" in caplog.text


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds child processes in /proc"
)


@needs_proc
def test_stopping_early_ends_the_child(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "big.csv", [f"https://x.test/{n}.jpg,p{n}" for n in range(5000)]
    )
    batches = read_batches([str(path)], size=100)

    next(batches)
    children = _children()
    batches.close()

    assert children
    assert not (_children() & children)


@needs_proc
def test_closing_an_unused_reader_ends_the_child(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "few.csv", ["https://x.test/1.jpg,a"])
    batches = read_batches([str(path)])
    children = _children()

    batches.close()

    assert children
    assert not (_children() & children)


@needs_proc
def test_a_reader_that_dies_is_reported_not_hung_on(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "big.csv", [f"https://x.test/{n}.jpg,p{n}" for n in range(50_000)]
    )
    batches = read_batches([str(path)], size=10)
    next(batches)

    for child in _children():
        os.kill(child, signal.SIGKILL)

    with pytest.raises(ManifestError, match="stopped unexpectedly"):
        for _ in batches:
            pass


def test_batches_count_valid_and_invalid_lines_alike(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mixed.csv", ["https://x.test/1,a", "nope,b", "x,c"])

    batches = list(batched(read_manifest(str(path)), size=2))

    assert [(len(batch), len(batch.errors)) for batch in batches] == [(1, 1), (0, 1)]


def _children() -> set[int]:
    """Process IDs of this process's living manifest readers."""
    found: set[int] = set()
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if parent == me and state != "Z" and b"child_main" in command:
            found.add(int(entry))
    return found
