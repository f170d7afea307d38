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
(the child's max RSS, target under 100 MB) and the status time (target under
0.3 s)::

    .venv/bin/python bench/load_manifest.py --rows 1000000
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
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="migrator-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        run(folder, args.rows)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, rows: int) -> None:
    """Generate the manifest, load it both ways, and print the comparison."""
    manifest = folder / "manifest.csv"
    started = time.perf_counter()
    write_manifest(manifest, rows)
    print(
        f"manifest: {rows:,} rows, {manifest.stat().st_size / 1e6:,.0f} MB, "
        f"written in {time.perf_counter() - started:.1f} s"
    )

    sqlite_db = fresh_job_table(folder / "sqlite3.db")
    shell = timed_child(
        ["sqlite3", str(sqlite_db)],
        stdin=_SQLITE_SCRIPT.format(
            manifest=manifest, now="strftime('%Y-%m-%d %H:%M:%f', 'now')"
        ),
    )
    migrator_db = fresh_file(folder / "migrator.db")
    load = ["load", str(manifest), "--db", str(migrator_db), "--json"]
    ours = timed_child([sys.executable, "-m", "migrator", "-q", *load])
    check_rows(sqlite_db, rows)
    check_rows(migrator_db, rows)
    status_s = status_query(migrator_db)
    command = timed_child(
        [sys.executable, "-m", "migrator", "status", "--db", str(migrator_db)]
    )
    report(shell, ours, status_s, command.wall_s)


def report(shell: Usage, ours: Usage, status_s: float, command_s: float) -> None:
    """Print the figures beside their targets."""
    ratio = ours.wall_s / shell.wall_s
    peak_mb = ours.peak_kb / 1024
    print(f"sqlite3 shell import:   {shell.wall_s:8.2f} s  (CPU {shell.cpu_s:.2f} s)")
    print(f"migrator load:          {ours.wall_s:8.2f} s  (CPU {ours.cpu_s:.2f} s)")
    print(
        f"ratio migrator/sqlite3: {ratio:8.2f}   {verdict(ratio <= RATIO_TARGET)}"
        f" (target <= {RATIO_TARGET}; CPU ratio {ours.cpu_s / shell.cpu_s:.2f})"
    )
    memory_ok = verdict(peak_mb < MEMORY_TARGET_MB)
    print(
        f"migrator peak memory:   {peak_mb:8.1f} MB {memory_ok}"
        f" (target < {MEMORY_TARGET_MB:.0f} MB)"
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
    """What a child process took: wall time, CPU time, peak RSS."""

    wall_s: float
    cpu_s: float
    peak_kb: int


def timed_child(command: list[str], stdin: str | None = None) -> Usage:
    """Run a command; return its wall time, CPU time and own peak RSS."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    if stdin is not None:
        assert child.stdin is not None
        child.stdin.write(stdin)
        child.stdin.close()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command[0]} exited with {child.returncode}")
    return Usage(elapsed, usage.ru_utime + usage.ru_stime, int(usage.ru_maxrss))


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
