"""Export a large migration's mapping with migrator and with the sqlite3 shell.

Fills a job table with ``--rows`` done rows (the last of every hundred failed, so
that the state filter has work to do), then in the same run:

1. exports source, image ID, variants and upload time of the done rows as CSV
   with the sqlite3 command-line shell, straight from SQL;
2. runs ``migrator export`` in a child process into a file, as a user would;
3. does the same with ``migrator export`` for half, then all, of the rows, to
   show that the time grows in proportion to the table (no sort per page).

Prints both times, their ratio and migrator's peak memory (the child's max RSS)::

    .venv/bin/python bench/export_mapping.py --rows 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from migrator.store import JobStore
from migrator.store.schema import images

_BATCH = 50_000
_SQLITE_EXPORT = """\
.bail on
.headers on
.mode csv
.output {out}
SELECT source, image_id, variants, uploaded_at FROM images
WHERE state = 'done' ORDER BY id;
"""


def fill(db: Path, rows: int) -> None:
    """Put ``rows`` rows in a new job table, as a finished run leaves them."""
    store = JobStore.open(str(db))
    now = dt.datetime.now(dt.timezone.utc)
    try:
        for start in range(0, rows, _BATCH):
            batch = [_row(n, now) for n in range(start, min(start + _BATCH, rows))]
            with store.transaction() as connection:
                connection.execute(insert(images), batch)
    finally:
        store.close()


def _row(n: int, now: dt.datetime) -> dict[str, object]:
    image_id = f"{n:08x}-0000-4000-8000-000000000000"
    done = n % 100 != 99
    return {
        "key": f"source:https://photos.example.com/{n}.jpg",
        "source": f"https://photos.example.com/{n}.jpg",
        "source_kind": "url",
        "image_id": image_id if done else None,
        "require_signed_urls": False,
        "state": "done" if done else "failed",
        "action": "upload",
        "attempts": 1,
        "next_attempt_at": now,
        "in_doubt": False,
        "error_code": None if done else "5455",
        "variants": json.dumps([f"https://imagedelivery.net/h/{image_id}/public"]),
        "uploaded_at": now if done else None,
        "content_hash": "",
        "created_at": now,
        "updated_at": now,
        "done_at": now if done else None,
    }


def time_sqlite(db: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["sqlite3", str(db)],
        input=_SQLITE_EXPORT.format(out=out),
        text=True,
        check=True,
    )
    return time.perf_counter() - started


def time_migrator(db: Path, out: Path) -> tuple[float, float]:
    """Run ``migrator export`` in a child; return seconds and its peak RSS in MB."""
    command = [sys.executable, "-m", "migrator", "-q", "export"]
    started = time.perf_counter()
    child = subprocess.Popen(
        [*command, "--db", str(db), "-o", str(out)], stderr=subprocess.DEVNULL
    )
    # wait4 reports this child's own resource use, not all children's.
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        sys.exit(f"migrator export failed with exit code {child.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fill", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill is not None:
        fill(args.fill, args.rows)
        return
    if shutil.which("sqlite3") is None:
        sys.exit("bench needs the sqlite3 command-line shell on PATH")

    folder = Path(tempfile.mkdtemp(prefix="migrator-bench-export-"))
    try:
        half, full = folder / "half.db", folder / "full.db"
        # Filled by children: a parent grown by the filling would be counted in
        # every later child's peak RSS, since a child starts as its copy.
        for db, rows in ((half, args.rows // 2), (full, args.rows)):
            subprocess.run(
                [sys.executable, __file__, "--fill", str(db), "--rows", str(rows)],
                check=True,
            )

        half_s, _ = time_migrator(half, folder / "half.csv")
        full_s, peak_mb = time_migrator(full, folder / "full.csv")
        sqlite_s = time_sqlite(full, folder / "sqlite.csv")
        lines = sum(1 for _ in (folder / "full.csv").open()) - 1
    finally:
        shutil.rmtree(folder)

    print(f"rows in table          {args.rows:,} ({lines:,} done exported)")
    print(f"sqlite3 shell export   {sqlite_s:.2f} s")
    print(f"migrator export        {full_s:.2f} s  ({lines / full_s:,.0f} rows/s)")
    print(f"ratio migrator/sqlite3 {full_s / sqlite_s:.1f}")
    print(f"half the rows          {half_s:.2f} s  (full/half {full_s / half_s:.2f})")
    print(f"peak memory (max RSS)  {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
