"""``migrator plan`` and ``migrator run --dry-run``: what the next run would do.

The plan comes from the job table alone: rows to upload, update and skip, the
requests that takes and how long at the configured rate. ``--check-sources``
also asks each source's origin (never Cloudflare) whether the upload could work.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from migrator.audit import SourceProblem
from migrator.audit import check_sources as probe_sources
from migrator.cli import cli
from migrator.cli.logs import echo, progress_bar
from migrator.cli.options import (
    db_option,
    json_option,
    open_existing_store,
    rate_options,
)
from migrator.client import ClientConfig, ImagesClient
from migrator.errors import ExitCode
from migrator.store import Action, JobStore, State
from migrator.store.reports import PlanCounts, RowFilter
from migrator.tokens import Secret

F = TypeVar("F", bound=Callable[..., Any])

CHECK_WORKERS = 16
"""Default threads for verify and --check-sources: 200 lookups/s at 80 ms each."""


def workers_option(function: F) -> F:
    """``--workers``: threads for lookups and probes."""
    return click.option(
        "--workers",
        type=click.IntRange(1, 256),
        default=CHECK_WORKERS,
        show_default=True,
        envvar="MIGRATOR_WORKERS",
        help="Threads sending lookups side by side.  [env: MIGRATOR_WORKERS]",
    )(function)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Requests a run would send and how long they take at the allowed rate."""

    requests: int
    rate: float
    """Requests per second over all batch tokens."""

    @property
    def seconds(self) -> float:
        return self.requests / self.rate


def estimate(counts: PlanCounts, tokens: int, rate: float) -> Estimate:
    """One request per upload or update, one more to settle each row in doubt,
    and one batch token per token (more only for runs longer than an hour)."""
    work = counts.upload + counts.update
    requests = work + counts.in_doubt + (tokens if work else 0)
    return Estimate(requests, tokens * rate)


@cli.command()
@db_option
@rate_options
@click.option(
    "--check-sources",
    is_flag=True,
    help="Also probe each source to upload (a ranged GET of its first 64 KB, or "
    "a read of a local file) for what Cloudflare would refuse: unreachable, "
    "over 10 MB, not a stored format, over 12,000 px or 100 megapixels.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="With --check-sources, probe at most this many sources.",
)
@workers_option
@json_option
def plan(
    db: str,
    tokens: int,
    rate: float,
    check_sources: bool,
    limit: int | None,
    workers: int,
    as_json: bool,
) -> int:
    """Say what the next run would do, without doing it.

    Counts the rows a run would upload, update and skip, the requests it would
    send and how long they take at the configured rate. Nothing is sent to
    Cloudflare; --check-sources only asks the sources' origins. Exits 1 when
    --check-sources finds a source that would fail. 'migrator run --dry-run'
    prints the same.

    \b
    Examples:
      migrator plan
      migrator plan --tokens 2                       # time at 400 requests/s
      migrator plan --check-sources --limit 1000     # probe a sample first
    """
    store = open_existing_store(db)
    try:
        counts = store.plan_counts()
        print_plan(counts, estimate(counts, tokens, rate), tokens, as_json)
        if not check_sources:
            return int(ExitCode.OK)
        problems = _probe(store, limit, workers, as_json)
    finally:
        store.close()
    return int(ExitCode.FAILURES if problems else ExitCode.OK)


def print_plan(counts: PlanCounts, cost: Estimate, tokens: int, as_json: bool) -> None:
    """Print a plan as text for people or as one JSON object."""
    if as_json:
        click.echo(
            json.dumps(
                {
                    **dataclasses.asdict(counts),
                    "skip": counts.done + counts.failed,
                    "requests": cost.requests,
                    "requests_per_s": cost.rate,
                    "seconds": round(cost.seconds, 1),
                }
            )
        )
        return
    click.echo(
        f"""\
to upload   {counts.upload:>12,}
to update   {counts.update:>12,}
to skip     {counts.done + counts.failed:>12,}   \
({counts.done:,} done, {counts.failed:,} failed: 'migrator retry' adds them)
leased      {counts.claimed:>12,}   (held by a run now; taken again if its lease ends)
in doubt    {counts.in_doubt:>12,}   (each looked up once before it is sent again)
requests    {cost.requests:>12,}   (one per upload or update and per row in doubt)
time        {_duration(cost.seconds):>12}   \
(at {cost.rate:,.0f} requests/s: {tokens} token(s) x {cost.rate / tokens:,.0f}/s)"""
    )


def dry_run_option(function: F) -> F:
    """``--dry-run``: print the plan instead of running."""
    return click.option(
        "--dry-run",
        is_flag=True,
        help="Say what the run would do (as 'migrator plan') and send nothing.",
    )(function)


def show_dry_run(db: str, manifests: tuple[str, ...], tokens: int, rate: float) -> int:
    """Print the plan of a run over the job table as it stands; return exit 0.

    A dry run changes nothing, so it does not load manifests: given any, it
    stops with a usage error that says to load them first.
    """
    if manifests:
        raise click.UsageError(
            "--dry-run plans from the job table as it stands and loads nothing: "
            "run 'migrator load' on the manifests first (it sends nothing to "
            "Cloudflare), then 'migrator run --dry-run'"
        )
    store = open_existing_store(db)
    try:
        counts = store.plan_counts()
    finally:
        store.close()
    print_plan(counts, estimate(counts, tokens, rate), tokens, as_json=False)
    return int(ExitCode.OK)


def _probe(store: JobStore, limit: int | None, workers: int, as_json: bool) -> int:
    """Probe the sources of rows to upload; print each problem; return how many."""
    uploads = RowFilter(actions=(Action.UPLOAD.value,))
    total = store.count_in(State.PENDING, uploads)
    # Probes reach origins only, never Cloudflare: the client needs no account.
    config = ClientConfig(account_id="", api_token=Secret(""))
    checked = problems = 0
    bar = progress_bar(min(total, limit or total), "probing", unit="source")
    try:
        with ImagesClient(config) as client:
            rows = store.rows_in(State.PENDING, uploads, limit=limit)
            for _, problem in probe_sources(rows, client, workers):
                checked += 1
                bar.update()
                if problem is not None:
                    problems += 1
                    _print_source_problem(problem, as_json)
    finally:
        bar.close()
    click.echo(f"{problems:,} of {checked:,} sources would fail.", err=True)
    return problems


def _print_source_problem(problem: SourceProblem, as_json: bool) -> None:
    if as_json:
        record = {
            "problem": problem.fault.value,
            "source": problem.row.source,
            "detail": problem.detail,
        }
        echo(json.dumps(record, ensure_ascii=False))
    else:
        echo(f"{problem.fault.value:<16} {problem.row.source}  {problem.detail}")


def _duration(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 3 h 20 min, 2 d 4 h."""
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
