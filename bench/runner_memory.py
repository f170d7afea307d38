"""Peak memory of ``migrator run`` against the size of its job table.

Fills two SQLite job tables through the loader, one with ``--small`` pending rows
and one with ``--large``, then runs ``migrator run --max-items N`` on each in a
child process against an emulator without rate limit, and prints each child's
peak resident memory (VmHWM) and their ratio. The runner claims rows a
batch at a time, so the ratio should stay close to 1.

    .venv/bin/python -m bench.runner_memory [--small 10000] [--large 1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.runner_common import UNLIMITED, EmulatorProcess, emulator_process, fill_table
from migrator.emulator import Settings


def peak_memory_mib(
    emulator: EmulatorProcess, db: Path, items: int
) -> tuple[float, float]:
    """Run ``migrator run`` on ``db`` in a child; its peak RSS in MiB, and seconds."""
    running = emulator.running
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": running.account_id,
        "CLOUDFLARE_API_TOKEN": running.api_token,
    }
    command = [
        sys.executable,
        "-m",
        "migrator",
        "-q",
        "run",
        "--db",
        str(db),
        "--api-url",
        running.main_url,
        "--batch-url",
        running.batch_url,
        "--max-items",
        str(items),
        "--rate",
        "10000",
    ]
    started = time.monotonic()
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, high_water_mib(child.pid))
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert child.stderr is not None
    if child.returncode not in (0, 4):
        summary = child.stderr.read().decode()
        raise RuntimeError(f"migrator run exited {child.returncode}: {summary}")
    return peak, elapsed


def high_water_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), 0 once it has gone.

    Read from /proc rather than from ``wait4``'s ``ru_maxrss``, which also
    counts the memory of this (larger) process that the child was forked from.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=3000)
    options = parser.parse_args()

    settings = Settings(batch_rate=UNLIMITED, api_rate=UNLIMITED)
    peaks: dict[int, float] = {}
    with emulator_process(settings) as emulator, tempfile.TemporaryDirectory() as tmp:
        for size in (options.small, options.large):
            db = Path(tmp) / f"rows-{size}.db"
            urls = (emulator.running.image_url(n) + f"?n={n}" for n in range(size))
            loading = fill_table(db, urls)
            emulator.reset()
            peaks[size], elapsed = peak_memory_mib(emulator, db, options.items)
            print(
                f"{size:>9,} pending rows (loaded in {loading:.0f} s): peak RSS "
                f"{peaks[size]:.1f} MiB over {options.items} uploads in {elapsed:.1f} s"
            )
    ratio = peaks[options.large] / peaks[options.small]
    print(f"peak memory ratio large/small: {ratio:.2f} (flat is 1.00)")


if __name__ == "__main__":
    main()
