"""``migrator verify``: is every done row's image in Cloudflare, as recorded?"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import click

from migrator.audit import Finding, Problem, as_json
from migrator.audit import verify as verify_rows
from migrator.cli import cli
from migrator.cli.logs import echo, progress_bar
from migrator.cli.options import cloudflare_options, db_option, open_existing_store
from migrator.cli.plan import workers_option
from migrator.cli.run import client_config
from migrator.client import (
    ClientConfig,
    ImagesClient,
)
from migrator.errors import ExitCode
from migrator.lock import run_lock
from migrator.store import Action, JobStore, State


@cli.command()
@db_option
@cloudflare_options
@workers_option
@click.option("--limit", type=click.IntRange(min=1), help="Check at most this many.")
@click.option(
    "--requeue",
    is_flag=True,
    help="Put rows found missing back to pending for upload, and rows found "
    "different back to pending for an update; the next run fixes them.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "jsonl"]),
    default="text",
    show_default=True,
    help="One line per problem for people, or one JSON object per problem.",
)
def verify(
    db: str,
    account_id: str | None,
    api_token_file: str | None,
    api_url: str,
    batch_url: str,
    tokens: int,
    rate: float,
    workers: int,
    limit: int | None,
    requeue: bool,
    output_format: str,
) -> int:
    """Check done rows against Cloudflare: images missing or different.

    Looks each done row up with image details on the batch host, at the batch
    rate (--rate per token), and prints the images that are missing and those
    whose metadata, requireSignedURLs or creator differ from the row (the
    migrator_key field migrator adds itself is ignored). Exits 0 when every
    image checked is as recorded, 1 otherwise.

    \b
    Examples:
      migrator verify --limit 1000                   # a sample
      migrator verify --requeue && migrator run      # check all, then repair
      migrator verify --format jsonl > findings.jsonl
    """
    config = client_config(
        account_id=account_id,
        api_token_file=api_token_file,
        api_url=api_url,
        batch_url=batch_url,
        tokens=tokens,
        rate=rate,
        connections=workers,
    )
    # Only a repair writes the table, and then it must not race a run.
    with run_lock(db) if requeue else contextlib.nullcontext():
        store = open_existing_store(db)
        try:
            tally = _verify(store, config, workers, limit, output_format)
            moved = 0
            if requeue:
                moved = store.requeue_done(tally.missing, Action.UPLOAD)
                moved += store.requeue_done(tally.differs, Action.UPDATE)
        finally:
            store.close()

    click.echo(
        f"verify: {tally.checked:,} checked, {len(tally.missing):,} missing, "
        f"{len(tally.differs):,} different, {tally.unchecked:,} not checked "
        "(transient errors)"
        + (f"; {moved:,} rows back to pending for the next run" if requeue else ""),
        err=True,
    )
    problems = len(tally.missing) + len(tally.differs) + tally.unchecked
    return int(ExitCode.FAILURES if problems else ExitCode.OK)


@dataclasses.dataclass
class _Tally:
    """What verify found: rows to repair by id, and counts."""

    checked: int = 0
    unchecked: int = 0
    missing: list[int] = dataclasses.field(default_factory=list)
    differs: list[int] = dataclasses.field(default_factory=list)


def _verify(
    store: JobStore,
    config: ClientConfig,
    workers: int,
    limit: int | None,
    output_format: str,
) -> _Tally:
    """Check done rows and print each finding as it comes."""
    done = store.count_in(State.DONE)
    bar = progress_bar(min(done, limit) if limit else done, "verifying")
    tally = _Tally()
    try:
        with ImagesClient(config) as client:
            rows = store.rows_in(State.DONE, limit=limit)
            for row, finding in verify_rows(rows, client, workers):
                tally.checked += 1
                bar.update()
                if finding is None:
                    continue
                _print_finding(finding, output_format)
                if finding.problem is Problem.MISSING:
                    tally.missing.append(row.row_id)
                elif finding.problem is Problem.DIFFERS:
                    tally.differs.append(row.row_id)
                else:
                    tally.unchecked += 1
    finally:
        bar.close()
    return tally


def _print_finding(finding: Finding, output_format: str) -> None:
    if output_format == "jsonl":
        echo(json.dumps(as_json(finding), ensure_ascii=False))
    else:
        echo(
            f"{finding.problem.value:<9} {finding.row.image_id or '-'}  "
            f"{finding.row.source}: {finding.detail}"
        )
