"""Load a large CSV manifest with migrator and with the sqlite3 shell, side by side.

Generates a CSV manifest of ``--rows`` rows (URL, custom ID, metadata, creator) in
a temporary folder, then in the same run:

1. imports it with the sqlite3 command-line shell into a job table made by
   migrator's own migrations (same columns, unique key, state indexes): the CSV
   goes into a staging table and from there into ``images``, deriving the key;
2. loads it with ``migrator load`` in a child process, which also validates every
   row and hashes its content;
3. times ``status`` on the loaded table, in process (the query) and as a command.

Prints both load times, their ratio (target: at most 1.5), migrator's peak memory
(target under 100 MB: the peaks of the loading process and of the process it
starts to read the manifest, added together) and the status time (target under
0.3 s). Both loads run ``--rounds`` times, alternating, and the round with the
median ratio is the one reported::

    .venv/bin/python bench/load_manifest.py --rows 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from migrator.store import JobStore

RATIO_TARGET = 1.5
MEMORY_TARGET_MB = 100.0
STATUS_TARGET_S = 0.3

_SQLITE_SCRIPT = """\
.bail on
CREATE TEMP TABLE staging (url TEXT, id TEXT, metadata TEXT, creator TEXT);
.import --csv --skip 1 {manifest} staging
BEGIN;
INSERT INTO images (
    key, source, source_kind, custom_id, metadata, require_signed_urls, creator,
    state, action, attempts, next_attempt_at, in_doubt, manifest, line,
    content_hash, created_at, updated_at
)
SELECT 'id:' || id, url, 'url', id, metadata, 0, creator,
    'pending', 'upload', 0, {now}, 0, '{manifest}', rowid + 1,
    '', {now}, {now}
FROM staging;
COMMIT;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--keep", type=Path, help="Work in this folder and keep it, for profiling."
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Load both ways this many times, alternating; the median ratio counts.",
    )
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="migrator-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        run(folder, args.rows, args.rounds)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, rows: int, rounds: int) -> None:
    """Generate the manifest, load it both ways, and print the comparison."""
    manifest = folder / "manifest.csv"
    started = time.perf_counter()
    write_manifest(manifest, rows)
    print(
        f"manifest: {rows:,} rows, {manifest.stat().st_size / 1e6:,.0f} MB, "
        f"written in {time.perf_counter() - started:.1f} s"
    )

    sqlite_db = folder / "sqlite3.db"
    migrator_db = folder / "migrator.db"
    pairs: list[tuple[Usage, Usage]] = []
    for number in range(1, rounds + 1):
        fresh_job_table(sqlite_db)
        shell = timed_child(
            ["sqlite3", str(sqlite_db)],
            stdin=_SQLITE_SCRIPT.format(
                manifest=manifest, now="strftime('%Y-%m-%d %H:%M:%f', 'now')"
            ),
        )
        fresh_file(migrator_db)
        load = ["load", str(manifest), "--db", str(migrator_db), "--json"]
        ours = timed_child([sys.executable, "-m", "migrator", "-q", *load])
        check_rows(sqlite_db, rows)
        check_rows(migrator_db, rows)
        print(
            f"round {number}: sqlite3 {shell.wall_s:.2f} s, migrator "
            f"{ours.wall_s:.2f} s, ratio {ours.wall_s / shell.wall_s:.2f}"
        )
        pairs.append((shell, ours))
    status_s = status_query(migrator_db)
    command = timed_child(
        [sys.executable, "-m", "migrator", "status", "--db", str(migrator_db)]
    )
    # The round with the median ratio stands for the run: the machine's speed
    # drifts between rounds, and each round times both loads back to back.
    pairs.sort(key=lambda pair: pair[1].wall_s / pair[0].wall_s)
    shell, ours = pairs[len(pairs) // 2]
    report(shell, ours, status_s, command.wall_s)
    highest = max(sum(usage.peaks_kb) for _, usage in pairs) / 1024
    print(f"highest peak memory over the rounds: {highest:.1f} MB")


def report(shell: Usage, ours: Usage, status_s: float, command_s: float) -> None:
    """Print the figures beside their targets."""
    ratio = ours.wall_s / shell.wall_s
    peak_mb = sum(ours.peaks_kb) / 1024
    each = " + ".join(f"{kb / 1024:.1f}" for kb in ours.peaks_kb)
    print(f"sqlite3 shell import:   {shell.wall_s:8.2f} s  (CPU {shell.cpu_s:.2f} s)")
    print(f"migrator load:          {ours.wall_s:8.2f} s  (CPU {ours.cpu_s:.2f} s)")
    print(
        f"ratio migrator/sqlite3: {ratio:8.2f}   {verdict(ratio <= RATIO_TARGET)}"
        f" (target <= {RATIO_TARGET}; CPU ratio {ours.cpu_s / shell.cpu_s:.2f})"
    )
    memory_ok = verdict(peak_mb < MEMORY_TARGET_MB)
    print(
        f"migrator peak memory:   {peak_mb:8.1f} MB {memory_ok}"
        f" (target < {MEMORY_TARGET_MB:.0f} MB; each process: {each} MB)"
    )
    status_ok = verdict(status_s < STATUS_TARGET_S)
    print(
        f"status query:           {status_s:8.3f} s {status_ok}"
        f" (target < {STATUS_TARGET_S} s; whole command {command_s:.2f} s)"
    )
    print(f"load average: {' '.join(f'{n:.2f}' for n in os.getloadavg())}")


def write_manifest(path: Path, rows: int) -> None:
    """A CSV manifest like a product catalogue export: every row has an id."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["url", "id", "metadata", "creator"])
        for number in range(rows):
            folder = f"{number // 1000:04d}"
            name = f"photo-{number:07d}.jpg"
            writer.writerow(
                [
                    f"https://images.example.com/library/{folder}/{name}",
                    f"library/{folder}/{name}",
                    json.dumps(
                        {"album": f"album-{number % 97}", "n": number},
                        separators=(",", ":"),
                    ),
                    "bench",
                ]
            )


def fresh_file(path: Path) -> Path:
    """``path``, with any database left there by an earlier run removed."""
    for leftover in (path, path.with_name(path.name + "-wal")):
        leftover.unlink(missing_ok=True)
    return path


def fresh_job_table(path: Path) -> Path:
    """An empty job table with migrator's schema, made by its migrations."""
    JobStore.open(str(fresh_file(path))).close()
    return path


@dataclass(frozen=True)
class Usage:
    """What a child process took: wall time, CPU time, peak RSS of each process."""

    wall_s: float
    cpu_s: float
    """The child's and its descendants' together."""
    peaks_kb: list[int]
    """The child's own peak RSS, then each descendant's, in the order they started."""


def timed_child(command: list[str], stdin: str | None = None) -> Usage:
    """Run a command; return its wall time, CPU time and peak RSS per process."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    watch = DescendantPeaks(child.pid)
    if stdin is not None:
        assert child.stdin is not None
        child.stdin.write(stdin)
        child.stdin.close()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    descendants = watch.stop()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command[0]} exited with {child.returncode}")
    cpu_s = usage.ru_utime + usage.ru_stime
    return Usage(elapsed, cpu_s, [int(usage.ru_maxrss), *descendants])


class DescendantPeaks:
    """Follows the peak RSS (VmHWM) of every process a child starts, while it runs.

    ``wait4`` gives the child's own peak exactly, but for its descendants only the
    largest of their peaks; memory the machine must have is their sum. A
    descendant's peak is read from /proc every few milliseconds until it exits, so
    a rise in its last moments could be missed; the reader process's memory is
    flat by then. Until a descendant has executed its own program it still runs
    in its parent's memory (``subprocess`` starts it with ``vfork``), and /proc
    shows the parent's figures: it is counted only once its command line differs
    from its parent's.
    """

    def __init__(self, pid: int, every_s: float = 0.01) -> None:
        self._pid = pid
        self._every_s = every_s
        self._peaks: dict[int, int] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def stop(self) -> list[int]:
        """Stop watching; each descendant's peak in kB, in the order they started."""
        self._stopped.set()
        self._thread.join()
        return [self._peaks[pid] for pid in sorted(self._peaks)]

    def _watch(self) -> None:
        while not self._stopped.wait(self._every_s):
            for parent, pid in _descendants(self._pid):
                if _command_line(pid) == _command_line(parent):
                    continue
                peak = _high_water_kb(pid)
                if peak:
                    self._peaks[pid] = max(self._peaks.get(pid, 0), peak)


def _descendants(pid: int) -> list[tuple[int, int]]:
    """Every process below ``pid``, each as (its parent, itself)."""
    found: list[tuple[int, int]] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found += [(pid, child), *_descendants(child)]
    return found


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _high_water_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def check_rows(path: Path, expected: int) -> None:
    store = JobStore.open(str(path))
    try:
        found = store.status().total
    finally:
        store.close()
    if found != expected:
        raise SystemExit(f"{path} holds {found} rows, not {expected}")


def status_query(path: Path, tries: int = 3) -> float:
    """The fastest of a few ``status`` queries on an open job table."""
    store = JobStore.open(str(path))
    best = float("inf")
    try:
        for _ in range(tries):
            started = time.perf_counter()
            store.status()
            best = min(best, time.perf_counter() - started)
    finally:
        store.close()
    return best


def verdict(met: bool) -> str:
    return "ok  " if met else "MISS"


if __name__ == "__main__":
    main()
