"""What the runner's benchmarks share: an emulator in its own process, a job table
filled through the loader, and a plain httpx client with a batch token.

The emulator runs in a child process so that it never competes with the code
being measured for this process's interpreter lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from migrator.cli.jobs import load_into
from migrator.client import ClientConfig
from migrator.emulator import Emulator, Faults, RateLimit, Settings
from migrator.store import JobStore
from migrator.tokens import Secret

UNLIMITED = RateLimit(1_000_000_000, 1.0)


@dataclasses.dataclass(frozen=True)
class RunningEmulator:
    """Addresses and credentials of an emulator serving in a child process."""

    main_url: str
    batch_url: str
    origin_url: str
    account_id: str
    api_token: str

    def client_config(self, **options: Any) -> ClientConfig:
        """Settings of a migrator client of this emulator."""
        return ClientConfig(
            account_id=self.account_id,
            api_token=Secret(self.api_token),
            api_url=self.main_url,
            batch_url=self.batch_url,
            **options,
        )

    def image_url(self, n: int) -> str:
        """A distinct small PNG on the emulator's origin."""
        return f"{self.origin_url}/synthetic/b{n % 997}/{8 + n % 61}x{8 + n % 53}.png"


def _serve(pipe: Connection, settings: Settings, faults: Faults | None) -> None:
    with Emulator(settings, faults=faults) as emulator:
        pipe.send(
            RunningEmulator(
                emulator.main_url,
                emulator.batch_url,
                emulator.origin_url,
                emulator.account_id,
                emulator.api_token,
            )
        )
        while True:
            command = pipe.recv()
            if command == "stats":
                pipe.send(emulator.stats())
            elif command == "reset":
                emulator.reset()
                pipe.send(None)
            else:
                return


class EmulatorProcess:
    """Start an emulator in a child process; ``stats`` and ``reset`` reach it."""

    def __init__(self, settings: Settings, faults: Faults | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, settings, faults), daemon=True
        )
        self._process.start()
        self.running: RunningEmulator = self._pipe.recv()

    def stats(self) -> dict[str, Any]:
        self._pipe.send("stats")
        stats: dict[str, Any] = self._pipe.recv()
        return stats

    def reset(self) -> None:
        self._pipe.send("reset")
        self._pipe.recv()

    def cpu_seconds(self) -> float:
        """CPU time the emulator's process has used so far (user and system)."""
        with open(f"/proc/{self._process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._pipe.send("stop")
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()


@contextlib.contextmanager
def emulator_process(
    settings: Settings, faults: Faults | None = None
) -> Iterator[EmulatorProcess]:
    """An emulator in a child process for the length of the block."""
    process = EmulatorProcess(settings, faults)
    try:
        yield process
    finally:
        process.stop()


def fill_table(db: Path, urls: Iterator[str] | list[str]) -> float:
    """Load ``urls`` into a new job table at ``db`` as a text manifest; seconds."""
    manifest = db.with_suffix(".txt")
    with manifest.open("w", encoding="utf-8") as out:
        for url in urls:
            out.write(url + "\n")
    started = time.monotonic()
    store = JobStore.open(str(db))
    try:
        load_into(store, [str(manifest)])
    finally:
        store.close()
    os.unlink(manifest)
    return time.monotonic() - started
