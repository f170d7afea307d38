"""The offline demo: a whole migration of the sample manifests on this machine.

``DemoSite`` lays out a fresh working folder, starts the emulator and an image
origin on loopback, and gives copies of the sample manifests that point at that
origin. The command in ``migrator.cli.demo`` loads them, runs, and shows the
result; nothing here needs an account or any network beyond 127.0.0.1.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from types import TracebackType

import migrator
from migrator.client import ClientConfig
from migrator.emulator import Emulator
from migrator.errors import ConfigError
from migrator.tokens import Secret

logger = logging.getLogger(__name__)

SAMPLE_ORIGIN = "http://127.0.0.1:8788"
"""The origin the sample manifests' URLs name; the demo puts its own in its place."""

SAMPLE_MANIFESTS = ("urls.txt", "products.csv", "catalog.jsonl", "local-files.txt")
"""Loaded in this order, one of each format."""

DB_NAME = "demo.db"


def sample_manifests_dir() -> Path:
    """The ``sample_manifests`` folder of the checkout migrator runs from."""
    folder = Path(migrator.__file__).resolve().parent.parent / "sample_manifests"
    if not (folder / "files").is_dir():
        raise ConfigError(
            f"sample manifests not found at {folder}: the demo runs from a clone "
            "of the repository, installed with 'pip install -e .'"
        )
    return folder


def new_work_dir(requested: Path | None) -> Path:
    """Return an empty folder for the demo: ``requested``, or a new temporary one.

    A requested folder may exist only if it is empty, so that the demo's job
    table is always fresh and nothing of the user's is ever overwritten.
    """
    if requested is None:
        return Path(tempfile.mkdtemp(prefix="migrator-demo-"))
    if requested.exists() and (not requested.is_dir() or any(requested.iterdir())):
        raise ConfigError(
            f"{requested} is not an empty folder; give --dir a new or empty one"
        )
    requested.mkdir(parents=True, exist_ok=True)
    return requested


class DemoSite:
    """The emulator, its origin and the demo's manifests, for one demo run.

    Use as a context manager: on entry the emulator serves on free loopback ports,
    its origin serving the samples' ``files/`` folder; on exit it stops.
    """

    def __init__(self, work_dir: Path, samples: Path) -> None:
        self.work_dir = work_dir
        self.samples = samples
        self.db = work_dir / DB_NAME
        self.emulator = Emulator(origin_dir=samples / "files")

    def __enter__(self) -> DemoSite:
        self.emulator.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.emulator.stop()

    def manifests(self) -> list[Path]:
        """The sample manifests to load, URL ones rewritten for this origin.

        A manifest naming the sample origin is copied into the working folder with
        the live origin's address put in, line for line, so load's line numbers
        still match the originals. One without URLs is used where it is, since
        its relative paths are relative to its own folder.
        """
        prepared = []
        for name in SAMPLE_MANIFESTS:
            original = self.samples / name
            text = original.read_text(encoding="utf-8")
            if SAMPLE_ORIGIN not in text:
                prepared.append(original)
                continue
            copy = self.work_dir / name
            copy.write_text(
                text.replace(SAMPLE_ORIGIN, self.emulator.origin_url), encoding="utf-8"
            )
            prepared.append(copy)
        return prepared

    def client_config(self, rate: float = 200.0, connections: int = 12) -> ClientConfig:
        """Client settings that reach this emulator with its own credentials."""
        return ClientConfig(
            account_id=self.emulator.account_id,
            api_token=Secret(self.emulator.api_token),
            api_url=self.emulator.main_url,
            batch_url=self.emulator.batch_url,
            rate=rate,
            connections=connections,
        )
