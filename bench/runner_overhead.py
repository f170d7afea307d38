"""Migrator's overhead: its uploads/s against a bare httpx thread pool's.

An emulator in a child process answers at once, with no rate limit. In each round,
a bare ``ThreadPoolExecutor`` sends N upload-by-URL requests (the same multipart
fields migrator sends) through one pooled ``httpx.Client``; then ``Runner`` uploads
the same N sources from a SQLite job table with the same number of threads,
claiming and recording every row. The emulator is emptied between measurements.
Prints each round and the ratio of medians (target: at least 0.85).

    .venv/bin/python bench/runner_overhead.py [--rows 3000] [--threads 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.runner_common import UNLIMITED, EmulatorProcess, emulator_process, fill_table
from migrator.client import ImagesClient
from migrator.emulator import Settings
from migrator.manifest import migration_key
from migrator.runner import Runner, RunSettings
from migrator.store import JobStore


@dataclasses.dataclass(frozen=True)
class Measure:
    rate: float
    """Uploads per second."""
    cpu_ms: float
    """This process's CPU time per upload, in milliseconds."""


def bare_pool(emulator: EmulatorProcess, urls: list[str], threads: int) -> Measure:
    """Uploads/s of a plain thread pool sending one request per URL."""
    running = emulator.running
    with ImagesClient(running.client_config()) as client:
        token = client.fetch_batch_token().secret.reveal()
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(
        base_url=running.batch_url,
        headers={"Authorization": f"Bearer {token}"},
        limits=limits,
        timeout=60,
    ) as http:

        def upload(url: str) -> int:
            key = migration_key(f"source:{url}")
            fields = {
                "requireSignedURLs": (None, "false"),
                "metadata": (None, f'{{"migrator_key":"{key}"}}'),
                "url": (None, url),
            }
            return http.post("/images/v1", files=fields).status_code

        started = time.perf_counter()
        cpu = time.process_time()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            statuses = list(pool.map(upload, urls))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    assert statuses.count(200) == len(urls), "the bare pool saw errors"
    return Measure(len(urls) / elapsed, 1000 * cpu / len(urls))


def migrator_run(
    emulator: EmulatorProcess, urls: list[str], threads: int, folder: Path, n: int
) -> Measure:
    """Uploads/s of the runner draining a job table of the same URLs."""
    db = folder / f"round-{n}.db"
    fill_table(db, urls)
    store = JobStore.open(str(db))
    settings = RunSettings(workers=threads, handle_signals=False)
    config = emulator.running.client_config(rate=1_000_000, connections=threads + 4)
    try:
        with ImagesClient(config) as client:
            started = time.perf_counter()
            cpu = time.process_time()
            summary = Runner(store, client, settings).run()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
    finally:
        store.close()
    assert summary.counts["done"] == len(urls), summary.line()
    return Measure(len(urls) / elapsed, 1000 * cpu / len(urls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    bare: list[Measure] = []
    ours: list[Measure] = []
    settings = Settings(batch_rate=UNLIMITED, api_rate=UNLIMITED)
    with emulator_process(settings) as emulator, tempfile.TemporaryDirectory() as tmp:
        urls = [emulator.running.image_url(n) for n in range(options.rows)]
        for n in range(options.rounds):
            emulator.reset()
            bare.append(bare_pool(emulator, urls, options.threads))
            emulator.reset()
            ours.append(migrator_run(emulator, urls, options.threads, Path(tmp), n))
            print(
                f"round {n + 1}: bare pool {bare[-1].rate:6.1f} uploads/s "
                f"({bare[-1].cpu_ms:.2f} ms CPU each), migrator {ours[-1].rate:6.1f} "
                f"uploads/s ({ours[-1].cpu_ms:.2f} ms CPU each), "
                f"ratio {ours[-1].rate / bare[-1].rate:.3f}"
            )

    bare_rate = statistics.median(m.rate for m in bare)
    our_rate = statistics.median(m.rate for m in ours)
    print(
        f"{options.rows} rows, {options.threads} threads, medians of "
        f"{options.rounds} rounds: bare pool {bare_rate:.1f} uploads/s, migrator "
        f"{our_rate:.1f} uploads/s; ratio {our_rate / bare_rate:.3f} (target >= 0.85)"
    )


if __name__ == "__main__":
    main()
