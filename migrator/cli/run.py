"""``migrator run``: upload every pending row of the job table to Cloudflare Images."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import click

from migrator.cli import cli
from migrator.cli.cron import summary_json_option, write_summary
from migrator.cli.jobs import load_into
from migrator.cli.logs import progress_allowed, progress_bar
from migrator.cli.options import cloudflare_options, db_option, open_store
from migrator.cli.plan import dry_run_option, show_dry_run
from migrator.client import (
    ClientConfig,
    ImagesClient,
)
from migrator.errors import ConfigError, ExitCode
from migrator.lock import run_lock
from migrator.runner import Progress, Runner, RunSettings, RunSummary
from migrator.store import JobStore
from migrator.tokens import Secret

logger = logging.getLogger(__name__)

WORKERS_PER_TOKEN = 64
"""Default threads per batch token: 200 requests/s at up to 300 ms each."""

LOG_PROGRESS_EVERY_S = 30.0
"""How often a run without a terminal logs a progress line."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType[float, Any]):
    """A duration such as ``90``, ``45s``, ``30m``, ``2h`` or ``1d``, in seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        match = _DURATION.match(str(value))
        if not match or float(match.group(1)) <= 0:
            self.fail(f"{value!r} is not a duration such as 90s, 30m or 2h", param, ctx)
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def client_config(
    *,
    account_id: str | None,
    api_token_file: str | None,
    api_url: str,
    batch_url: str,
    tokens: int,
    rate: float,
    connections: int,
) -> ClientConfig:
    """Build the client's settings from options and the environment.

    The API token comes from ``--api-token-file`` when given, else from
    ``CLOUDFLARE_API_TOKEN``; it is never accepted on the command line, where
    other users could read it in the process list.
    """
    if not account_id:
        raise ConfigError(
            "no Cloudflare account ID: set CLOUDFLARE_ACCOUNT_ID or pass --account-id"
        )
    if api_token_file:
        try:
            with open(api_token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as error:
            raise ConfigError(
                f"cannot read the API token file {api_token_file}: {error.strerror}"
            ) from error
    else:
        token = os.environ.get("CLOUDFLARE_API_TOKEN", "").strip()
    if not token:
        raise ConfigError(
            "no Cloudflare API token: set CLOUDFLARE_API_TOKEN or pass "
            "--api-token-file (the token needs Images edit permission)"
        )
    return ClientConfig(
        account_id=account_id,
        api_token=Secret(token),
        api_url=api_url,
        batch_url=batch_url,
        tokens=tokens,
        rate=rate,
        connections=connections + 4,
    )


def run_migration(
    store: JobStore, config: ClientConfig, settings: RunSettings
) -> RunSummary:
    """Run once over ``store`` with a client built from ``config``.

    The core of ``migrator run`` without its command line, for callers that wrap
    it (a lock, a dry run, a summary file).
    """
    with ImagesClient(config) as client:
        return Runner(store, client, settings).run()


class ProgressReporter:
    """Draw a progress bar on a terminal, else log a line every half minute."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._next_log = time.monotonic() + LOG_PROGRESS_EVERY_S

    def __call__(self, progress: Progress) -> None:
        if progress_allowed():
            self._draw(progress)
        elif time.monotonic() >= self._next_log:
            self._next_log = time.monotonic() + LOG_PROGRESS_EVERY_S
            logger.info(
                "run: %d done, %d failed, %d to retry of %s, %.1f images/s, %d 429s",
                progress.done,
                progress.failed,
                progress.retried,
                progress.total if progress.total is not None else "?",
                progress.rate,
                progress.throttled,
            )

    def _draw(self, progress: Progress) -> None:
        if self._bar is None:
            self._bar = progress_bar(progress.total, "uploading")
        self._bar.n = progress.done + progress.failed
        self._bar.set_postfix(failed=progress.failed, throttled=progress.throttled)

    def close(self) -> None:
        """Take the bar off the screen."""
        if self._bar is not None:
            self._bar.close()


def _verbosity() -> int:
    """How many -v the group was given (every outcome is logged from -v on)."""
    settings = click.get_current_context().find_root().obj or {}
    return int(settings.get("verbose", 0))


def load_manifests(store: JobStore, manifests: tuple[str, ...]) -> int:
    """Load ``manifests`` into ``store`` as ``migrator load`` does; count rejects."""
    if not manifests:
        return 0
    return load_into(store, manifests).rejected


@cli.command("run")
@click.argument("manifests", nargs=-1, type=click.Path(allow_dash=True))
@db_option
@cloudflare_options
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    envvar="MIGRATOR_WORKERS",
    help=f"Upload threads.  [default: {WORKERS_PER_TOKEN} per token; "
    "env: MIGRATOR_WORKERS]",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 100),
    default=8,
    show_default=True,
    envvar="MIGRATOR_MAX_ATTEMPTS",
    help="Attempts per image before a transient error fails it.  "
    "[env: MIGRATOR_MAX_ATTEMPTS]",
)
@click.option(
    "--max-duration",
    type=Duration(),
    envvar="MIGRATOR_MAX_DURATION",
    help="Stop claiming after this long (90s, 30m, 2h) and end with exit 4 if "
    "work remains.  [env: MIGRATOR_MAX_DURATION]",
)
@click.option(
    "--max-items",
    type=click.IntRange(1),
    envvar="MIGRATOR_MAX_ITEMS",
    help="Attempt at most this many images, then end with exit 4 if work "
    "remains.  [env: MIGRATOR_MAX_ITEMS]",
)
@click.option(
    "--fetch-local",
    is_flag=True,
    envvar="MIGRATOR_FETCH_LOCAL",
    help="Download URL sources here and upload the bytes, for origins Cloudflare "
    "cannot reach.  [env: MIGRATOR_FETCH_LOCAL]",
)
@click.option(
    "--lease",
    type=Duration(),
    default=120.0,
    show_default=True,
    envvar="MIGRATOR_LEASE",
    help="How long a claimed image stays reserved without renewal; on a shared "
    "PostgreSQL table, how long other runs wait before taking over a crashed "
    "run's images.  [env: MIGRATOR_LEASE]",
)
@summary_json_option
@dry_run_option
def run_command(
    manifests: tuple[str, ...],
    db: str,
    account_id: str | None,
    api_token_file: str | None,
    api_url: str,
    batch_url: str,
    workers: int | None,
    tokens: int,
    rate: float,
    max_attempts: int,
    max_duration: float | None,
    max_items: int | None,
    fetch_local: bool,
    lease: float,
    summary_json: Path | None,
    dry_run: bool,
) -> int:
    """Upload every pending image to Cloudflare Images.

    Loads MANIFEST files first when given (as 'migrator load' does), then uploads
    each pending row of the job table through the Images batch API, as fast as
    the batch tokens allow. Safe to interrupt at any moment: Ctrl-C finishes the
    requests in flight and writes every outcome back (press it again to quit at
    once); the next run resumes where this one stopped, and never uploads an
    image twice.

    Credentials come from CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN (or
    --api-token-file); the token needs the Images edit permission.

    Exit codes: 0 all done, 1 some images failed, 2 usage or manifest error,
    3 stopped by auth, quota or the circuit breaker, 4 stopped at a cap with work
    remaining, 5 another run holds the job table, 130 interrupted.

    \b
    Examples:
      migrator run photos.csv                  # load, then upload everything
      migrator run --tokens 2 --workers 64     # 400 requests/s
      migrator run --max-duration 50m          # an hourly cron slot
      migrator run --summary-json run.json     # figures for monitoring
      migrator run --dry-run                   # what it would do, sending nothing
      migrator run --fetch-local               # origin unreachable from Cloudflare
      migrator run --api-url http://127.0.0.1:8787/client/v4 \\
                   --batch-url http://127.0.0.1:8787   # against the emulator
    """
    if dry_run:
        return show_dry_run(db, manifests, tokens, rate)
    config = client_config(
        account_id=account_id,
        api_token_file=api_token_file,
        api_url=api_url,
        batch_url=batch_url,
        tokens=tokens,
        rate=rate,
        connections=workers or WORKERS_PER_TOKEN * tokens,
    )
    reporter = ProgressReporter()
    settings = RunSettings(
        workers=workers or WORKERS_PER_TOKEN * tokens,
        max_attempts=max_attempts,
        max_duration=max_duration,
        max_items=max_items,
        fetch_local=fetch_local,
        lease=lease,
        progress=reporter,
        log_outcomes=_verbosity() > 0,
    )

    # One run at a time per SQLite job table, taken before the table is opened.
    with run_lock(db) as lock:
        store = open_store(db)
        try:
            if lock is not None:
                _release_abandoned(store)
            rejected = load_manifests(store, manifests)
            summary = run_migration(store, config, settings)
        finally:
            reporter.close()
            store.close()

    click.echo(summary.line(), err=True)
    if summary_json is not None:
        write_summary(summary_json, summary, db)
    if summary.error is not None:
        raise summary.error
    if rejected and summary.exit_code is ExitCode.OK:
        # Every loaded row is done, but the manifests had rows that never loaded.
        return int(ExitCode.USAGE)
    return int(summary.exit_code)


def _release_abandoned(store: JobStore) -> None:
    """Free the claims of a killed run at once: the lock proves it is gone."""
    released = store.release_abandoned()
    if released:
        logger.warning(
            "job table: %d rows were claimed by a run that stopped without "
            "writing them back; each is settled before it is sent again",
            released,
        )
