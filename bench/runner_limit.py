"""The physical limit: uploads/s against Cloudflare's 200 requests/s per batch token.

An emulator in a child process enforces 200 requests per second per batch token
(a sliding one-second window, 429 above it) and answers every request 100 ms late.
The runner drains a SQLite job table for ``--seconds`` with one token, then with
two, and prints for each the uploads/s and the 429s the emulator sent, then the
ratio of the two rates. Targets: one token at least 190 uploads/s with zero 429s
over at least 30 s; two tokens at least 1.9 times that.

Sources are small local PNG files by default (``--source url`` has the emulator
fetch each from its origin, which costs the emulator twice the CPU). To show
what the machine itself allows, the same emulator set-up without its rate limit
is first measured with a bare httpx thread pool: the emulator's ceiling.

One Python process tops out at a few hundred requests a second of CPU; with
``--postgres URL`` the bench also runs two processes of one token each on one
PostgreSQL job table (in a schema of its own, dropped afterwards), the way a
migration scales past that.

    .venv/bin/python -m bench.runner_limit [--seconds 32] [--source file|url]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import itertools
import logging
import math
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.runner_common import (
    UNLIMITED,
    EmulatorProcess,
    RunningEmulator,
    emulator_process,
    fill_table,
)
from migrator.cli.jobs import load_into
from migrator.client import ImagesClient
from migrator.emulator import Faults, RateLimit, Settings
from migrator.emulator.origin import make_image
from migrator.runner import Progress, Runner, RunSettings
from migrator.store import JobStore

LIMIT = 200
WARM_UP_S = 2.0
CEILING_THREADS = 64


def sources(
    emulator: EmulatorProcess, folder: Path, kind: str, count: int
) -> list[str]:
    """``count`` distinct sources: PNG files in ``folder``, or origin URLs."""
    if kind == "url":
        return [emulator.running.image_url(n) for n in range(count)]
    picture = make_image(12, 10, "png")
    folder.mkdir(exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"{n}.png"
        if not path.exists():
            path.write_bytes(picture)
        paths.append(str(path))
    return paths


def ceiling(emulator: EmulatorProcess, paths: list[str], threads: int) -> float:
    """Uploads/s a bare thread pool gets from an emulator without rate limit."""
    with ImagesClient(emulator.running.client_config()) as client:
        token = client.fetch_batch_token().secret.reveal()
    picture = Path(paths[0]).read_bytes() if not paths[0].startswith("http") else b""
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    deadline = time.monotonic() + 5.0
    counter = itertools.count()
    with httpx.Client(
        base_url=emulator.running.batch_url,
        headers={"Authorization": f"Bearer {token}"},
        limits=limits,
        timeout=60,
    ) as http:

        def loop(_: int) -> None:
            while time.monotonic() < deadline:
                source = paths[next(counter) % len(paths)]
                files: dict[str, Any] = (
                    {"file": ("a.png", picture, "image/png")}
                    if picture
                    else {"url": (None, source)}
                )
                http.post("/images/v1", files=files)

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(loop, range(threads)))
        elapsed = time.monotonic() - started
    stored: int = emulator.stats()["uploads"]["stored"]
    return stored / elapsed


def workers_per_token(latency: float) -> int:
    """Enough threads to keep a token busy: its rate times the latency, plus a
    fifth for the time each request spends in migrator. More only add threads
    that wait, and cost CPU (and send-time jitter) while they do."""
    return math.ceil(LIMIT * latency * 1.2)


@dataclasses.dataclass(frozen=True)
class Drained:
    """What one timed run showed."""

    overall: float
    """Uploads/s from start to end, start-up included."""
    sustained: float
    """Uploads/s after the first ``WARM_UP_S`` seconds."""
    throttled: int
    """429s the emulator sent."""
    emulator_busy: float
    """The emulator's CPU use; 1.0 is one core busy all the time."""
    client_busy: float
    """This process's CPU use, likewise."""


def drain(
    emulator: EmulatorProcess, db: Path, tokens: int, seconds: float, latency: float
) -> Drained:
    """Run the runner for ``WARM_UP_S`` + ``seconds`` with ``tokens`` tokens."""
    before = emulator.stats()["throttled"]
    emulator_cpu, client_cpu = emulator.cpu_seconds(), time.process_time()
    samples: list[Progress] = []
    workers = workers_per_token(latency) * tokens
    config = emulator.running.client_config(tokens=tokens, connections=workers + 4)
    settings = RunSettings(
        workers=workers,
        max_duration=WARM_UP_S + seconds,
        handle_signals=False,
        progress=samples.append,
        progress_interval=0.5,
    )
    store = JobStore.open(str(db))
    try:
        with ImagesClient(config) as client:
            summary = Runner(store, client, settings).run()
    finally:
        store.close()

    warm = next(sample for sample in samples if sample.elapsed >= WARM_UP_S)
    last = samples[-1]
    return Drained(
        overall=summary.counts["done"] / summary.elapsed,
        sustained=(last.done - warm.done) / (last.elapsed - warm.elapsed),
        throttled=emulator.stats()["throttled"] - before,
        emulator_busy=(emulator.cpu_seconds() - emulator_cpu) / summary.elapsed,
        client_busy=(time.process_time() - client_cpu) / summary.elapsed,
    )


def _run_one_token(
    url: str, running: RunningEmulator, seconds: float, latency: float, out: Any
) -> None:
    store = JobStore.open(url)
    workers = workers_per_token(latency)
    config = running.client_config(tokens=1, connections=workers + 4)
    settings = RunSettings(workers=workers, max_duration=seconds, handle_signals=False)
    try:
        with ImagesClient(config) as client:
            summary = Runner(store, client, settings).run()
    finally:
        store.close()
    out.put(summary.counts["done"] / summary.elapsed)


def drain_processes(
    emulator: EmulatorProcess,
    server: str,
    paths: list[str],
    seconds: float,
    latency: float,
) -> tuple[float, int]:
    """Two processes of one token each on one PostgreSQL table: uploads/s, 429s."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
    target = url.render_as_string(hide_password=False)
    try:
        manifest = Path(paths[0]).parent / "manifest.txt"
        manifest.write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")
        store = JobStore.open(target)
        load_into(store, [str(manifest)])
        store.close()
        emulator.reset()
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        children = [
            context.Process(
                target=_run_one_token,
                args=(target, emulator.running, WARM_UP_S + seconds, latency, results),
            )
            for _ in range(2)
        ]
        for child in children:
            child.start()
        rate = sum(results.get() for _ in children)
        for child in children:
            child.join()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    throttled: int = emulator.stats()["throttled"]
    return rate, throttled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=32.0)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--source", choices=("file", "url"), default="file")
    parser.add_argument("--postgres", metavar="URL", help="also run two processes")
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    faults = Faults(latency=options.latency)
    rows = int(LIMIT * 2 * (options.seconds + WARM_UP_S + 10))

    with tempfile.TemporaryDirectory() as tmp:
        unlimited = Settings(batch_rate=UNLIMITED)
        with emulator_process(unlimited, faults) as emulator:
            paths = sources(emulator, Path(tmp) / "images", options.source, rows)
            top = ceiling(emulator, paths, CEILING_THREADS)
        print(
            f"emulator ceiling (no rate limit, {options.latency:.2f} s latency, bare "
            f"pool of {CEILING_THREADS} threads): {top:.1f} uploads/s"
        )

        rates: dict[int, float] = {}
        with emulator_process(
            Settings(batch_rate=RateLimit(LIMIT, 1.0)), faults
        ) as emulator:
            for tokens in (1, 2):
                db = Path(tmp) / f"tokens-{tokens}.db"
                count = int(LIMIT * tokens * (options.seconds + WARM_UP_S + 10))
                fill_table(
                    db, sources(emulator, Path(tmp) / "images", options.source, count)
                )
                emulator.reset()
                run = drain(emulator, db, tokens, options.seconds, options.latency)
                rates[tokens] = run.sustained
                print(
                    f"{tokens} token(s): {run.sustained:.1f} uploads/s sustained over "
                    f"{options.seconds:.0f} s ({run.overall:.1f} with start-up), "
                    f"{run.throttled} x 429; CPU: emulator {run.emulator_busy:.0%}, "
                    f"migrator {run.client_busy:.0%} of a core"
                )

            if options.postgres:
                paths = sources(emulator, Path(tmp) / "images", "file", rows)
                rate, throttled = drain_processes(
                    emulator, options.postgres, paths, options.seconds, options.latency
                )
                print(
                    f"2 processes x 1 token on PostgreSQL: {rate:.1f} uploads/s "
                    f"(start-up included), {throttled} x 429, ratio to one token "
                    f"{rate / rates[1]:.2f}"
                )

    print(
        f"one token {rates[1]:.1f} uploads/s ({rates[1] / LIMIT:.1%} of the limit; "
        f"target >= 190 with zero 429s); two tokens {rates[2]:.1f} uploads/s, "
        f"ratio {rates[2] / rates[1]:.2f} (target >= 1.9)"
    )


if __name__ == "__main__":
    main()
