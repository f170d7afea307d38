"""``migrator demo``: a whole migration of the sample manifests, offline."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import click

from migrator.cli import cli
from migrator.cli.jobs import load_into
from migrator.cli.reports import write_failure_table
from migrator.cli.run import ProgressReporter, run_migration
from migrator.demo import DemoSite, new_work_dir, sample_manifests_dir
from migrator.errors import ConfigError, ExitCode
from migrator.runner import RunSettings, RunSummary
from migrator.store import JobStore, State

logger = logging.getLogger(__name__)

DEMO_WORKERS = 8
DEMO_MAX_ATTEMPTS = 3


@cli.command()
@click.option(
    "--dir",
    "work_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo's job table and manifests; must be new or empty.  "
    "[default: a new temporary folder]",
)
def demo(work_dir: Path | None) -> int:
    """Run a whole migration on this machine: no account, no network.

    Starts the Cloudflare Images emulator and a local image origin on
    127.0.0.1, loads the sample manifests (text, CSV, JSON Lines, local
    files) into a fresh SQLite job table, uploads every row, and prints the
    summary, the failures the samples contain on purpose, and commands to try
    next on the job table it leaves behind.

    \b
    Examples:
      migrator demo
      migrator demo --dir ./demo && migrator status --db ./demo/demo.db
    """
    try:
        folder = new_work_dir(work_dir)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--dir") from error
    samples = sample_manifests_dir()
    with DemoSite(folder, samples) as site:
        click.echo(
            f"Emulator of the Images API at {site.emulator.main_url}, "
            f"image origin at {site.emulator.origin_url}.",
            err=True,
        )
        store = JobStore.open(str(site.db))
        try:
            click.echo(f"\nLoading the sample manifests from {samples}:", err=True)
            load_into(store, tuple(str(path) for path in site.manifests()))

            click.echo("\nUploading:", err=True)
            summary = _run(store, site)
            click.echo(summary.line(), err=True)

            click.echo("\nFailed on purpose (see sample_manifests/README.md):")
            write_failure_table(sys.stdout, store.rows_in(State.FAILED))
        finally:
            store.close()

    click.echo(_next_steps(site.db))
    if summary.error is not None:
        raise summary.error
    return int(ExitCode.OK)


def _run(store: JobStore, site: DemoSite) -> RunSummary:
    reporter = ProgressReporter()
    settings = RunSettings(
        workers=DEMO_WORKERS,
        max_attempts=DEMO_MAX_ATTEMPTS,
        backoff_base=0.2,
        backoff_cap=1.0,
        progress=reporter,
    )
    try:
        return run_migration(store, site.client_config(), settings)
    finally:
        reporter.close()


def _next_steps(db: Path) -> str:
    quoted = shlex.quote(str(db))
    return f"""
The job table is {db}. Try, in this shell:

  export MIGRATOR_DB={quoted}
  migrator status                                # counts by state, top errors
  migrator failures                              # what failed, and why
  migrator failures --format csv -o fix.csv      # the failures as a manifest
  migrator export -o mapping.csv                 # source -> image ID, variants
  migrator retry --code 5455                     # failed rows back to pending
  migrator plan                                  # what the next run would do
"""
