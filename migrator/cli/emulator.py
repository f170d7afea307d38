"""``migrator emulator``: serve a local Cloudflare Images API until interrupted."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from migrator.cli import cli
from migrator.emulator import Emulator, Faults, RateLimit, Settings
from migrator.emulator.settings import (
    DEFAULT_ACCOUNT_HASH,
    DEFAULT_ACCOUNT_ID,
    DEFAULT_API_TOKEN,
)
from migrator.errors import ConfigError

logger = logging.getLogger(__name__)

_SECONDS = click.FloatRange(min=0)
_FAULT_NAMES = ", ".join(Faults().describe())


def _faults(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> Faults | None:
    if not value:
        return None
    try:
        return Faults.parse(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from error


@cli.command(
    epilog=f"""\b
Faults (--faults NAME=VALUE,...; rates are chances per request, 0 to 1):
  error_rate     answer 500/5500 or 503/5503 without handling
  throttle_rate  answer 429 with Retry-After: 1
  storm_rate     start a 429 storm lasting storm_seconds (default 5)
  latency        seconds added to every answer, plus up to latency_jitter
  drop_rate      handle the request, then cut the answer off halfway
  lose_rate      cut the answer off the same way, without handling
  slow_rate      send the answer slowly, over slow_seconds (default 2)
  expire_rate    refuse a valid batch token with 10000, and from then on
  seed           seed of the random draws, for repeatable runs
  (all: {_FAULT_NAMES})
Change them while it runs:
  curl -X POST localhost:8787/_emulator/faults -d '{{"error_rate": 0.1}}'

\b
Control routes (no auth):
  GET  /_emulator/stats   requests by route and status, uploads, 429s sent
  POST /_emulator/reset   forget every image and counter
  GET|POST /_emulator/faults

\b
Examples:
  migrator emulator                              # main and batch API on :8787
  migrator emulator --data emu.db --origin-dir ./photos
  migrator emulator --batch-token-ttl 60 --faults error_rate=0.05,seed=7
  migrator emulator --port 0 --batch-port 0      # free ports, batch on its own
"""
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="MIGRATOR_EMULATOR_HOST",
    help="Address to listen on.  [env: MIGRATOR_EMULATOR_HOST]",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8787,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_PORT",
    help="Port of the main API, the batch API and the control routes; 0 picks a "
    "free one.  [env: MIGRATOR_EMULATOR_PORT]",
)
@click.option(
    "--batch-port",
    type=click.IntRange(0, 65535),
    envvar="MIGRATOR_EMULATOR_BATCH_PORT",
    help="Also serve the batch API on this port, as Cloudflare serves it on its "
    "own host.  [default: the --port]  [env: MIGRATOR_EMULATOR_BATCH_PORT]",
)
@click.option(
    "--origin-port",
    type=click.IntRange(0, 65535),
    default=8788,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_ORIGIN_PORT",
    help="Port of the local image origin (/files/, /synthetic/<W>x<H>.<ext>, "
    "/status/<code>).  [env: MIGRATOR_EMULATOR_ORIGIN_PORT]",
)
@click.option(
    "--origin-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="MIGRATOR_EMULATOR_ORIGIN_DIR",
    help="Directory the origin serves under /files/.  "
    "[env: MIGRATOR_EMULATOR_ORIGIN_DIR]",
)
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MIGRATOR_EMULATOR_DATA",
    help="Keep images in this SQLite file across restarts.  [default: memory "
    "only]  [env: MIGRATOR_EMULATOR_DATA]",
)
@click.option(
    "--account-id",
    default=DEFAULT_ACCOUNT_ID,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_ACCOUNT_ID",
    help="The one account served.  [env: MIGRATOR_EMULATOR_ACCOUNT_ID]",
)
@click.option(
    "--account-hash",
    default=DEFAULT_ACCOUNT_HASH,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_ACCOUNT_HASH",
    help="Account hash in delivery URLs and in batch tokens' sub.  "
    "[env: MIGRATOR_EMULATOR_ACCOUNT_HASH]",
)
@click.option(
    "--api-token",
    "api_tokens",
    multiple=True,
    default=[DEFAULT_API_TOKEN],
    show_default=True,
    envvar="MIGRATOR_EMULATOR_API_TOKENS",
    help="An API token the main API accepts; repeat for more.  "
    "[env: MIGRATOR_EMULATOR_API_TOKENS, separated by spaces]",
)
@click.option(
    "--batch-token-ttl",
    type=click.FloatRange(min=1),
    default=3600,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_BATCH_TOKEN_TTL",
    help="Lifetime of a batch token, in seconds.  "
    "[env: MIGRATOR_EMULATOR_BATCH_TOKEN_TTL]",
)
@click.option(
    "--batch-rate",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_BATCH_RATE",
    help="Requests per second one batch token may make; more get 429.  "
    "[env: MIGRATOR_EMULATOR_BATCH_RATE]",
)
@click.option(
    "--api-rate",
    type=click.IntRange(min=1),
    default=1200,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_API_RATE",
    help="Requests one API token may make per --api-window.  "
    "[env: MIGRATOR_EMULATOR_API_RATE]",
)
@click.option(
    "--api-window",
    type=click.FloatRange(min=0.001),
    default=300,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_API_WINDOW",
    help="Window of --api-rate, in seconds.  [env: MIGRATOR_EMULATOR_API_WINDOW]",
)
@click.option(
    "--api-block",
    type=_SECONDS,
    default=300,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_API_BLOCK",
    help="Seconds every call of an API token is refused after it goes over "
    "--api-rate; 0 refuses only the calls over.  [env: MIGRATOR_EMULATOR_API_BLOCK]",
)
@click.option(
    "--address-rate",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_ADDRESS_RATE",
    help="Main-API requests per second one client address may make.  "
    "[env: MIGRATOR_EMULATOR_ADDRESS_RATE]",
)
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    envvar="MIGRATOR_EMULATOR_ALLOW_HOSTS",
    help="A host upload-by-URL may fetch from, besides loopback; repeat for "
    "more.  [env: MIGRATOR_EMULATOR_ALLOW_HOSTS, separated by spaces]",
)
@click.option(
    "--allow-any-host",
    is_flag=True,
    envvar="MIGRATOR_EMULATOR_ALLOW_ANY_HOST",
    help="Let upload-by-URL fetch from any host.  "
    "[env: MIGRATOR_EMULATOR_ALLOW_ANY_HOST]",
)
@click.option(
    "--fetch-timeout",
    type=click.FloatRange(min=0.1),
    default=30,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_FETCH_TIMEOUT",
    help="Seconds an upload-by-URL fetch may take.  "
    "[env: MIGRATOR_EMULATOR_FETCH_TIMEOUT]",
)
@click.option(
    "--variants",
    default="public",
    show_default=True,
    envvar="MIGRATOR_EMULATOR_VARIANTS",
    help="Comma-separated variant names in every image's variants URLs.  "
    "[env: MIGRATOR_EMULATOR_VARIANTS]",
)
@click.option(
    "--quota",
    type=click.IntRange(min=0),
    default=10_000_000,
    show_default=True,
    envvar="MIGRATOR_EMULATOR_QUOTA",
    help="Images the account may store; uploads past it get 5453.  "
    "[env: MIGRATOR_EMULATOR_QUOTA]",
)
@click.option(
    "--batch-list-forbidden",
    is_flag=True,
    envvar="MIGRATOR_EMULATOR_BATCH_LIST_FORBIDDEN",
    help='Refuse GET /images/v2 on the batch host with 403 and code "103", as '
    "one report saw.  [env: MIGRATOR_EMULATOR_BATCH_LIST_FORBIDDEN]",
)
@click.option(
    "--faults",
    callback=_faults,
    envvar="MIGRATOR_EMULATOR_FAULTS",
    metavar="NAME=VALUE,...",
    help="Faults to inject from the start (see below).  [default: none]  "
    "[env: MIGRATOR_EMULATOR_FAULTS]",
)
def emulator(
    host: str,
    port: int,
    batch_port: int | None,
    origin_port: int,
    origin_dir: Path | None,
    data: Path | None,
    account_id: str,
    account_hash: str,
    api_tokens: tuple[str, ...],
    batch_token_ttl: float,
    batch_rate: int,
    api_rate: int,
    api_window: float,
    api_block: float,
    address_rate: int,
    allowed_hosts: tuple[str, ...],
    allow_any_host: bool,
    fetch_timeout: float,
    variants: str,
    quota: int,
    batch_list_forbidden: bool,
    faults: Faults | None,
) -> None:
    """Serve a local Cloudflare Images API, main and batch hosts.

    It answers as Cloudflare does (envelopes, codes, batch tokens, rate limits),
    really fetches upload-by-URL sources, checks the bytes, and can inject
    faults. It prints the environment that points `migrator run` at it.
    """
    settings = Settings(
        account_id=account_id,
        account_hash=account_hash,
        api_tokens=api_tokens,
        batch_token_ttl=batch_token_ttl,
        batch_rate=RateLimit(batch_rate, 1.0),
        api_rate=RateLimit(api_rate, api_window, block=api_block),
        address_rate=RateLimit(address_rate, 1.0),
        allowed_hosts=allowed_hosts,
        allow_any_host=allow_any_host,
        fetch_timeout=fetch_timeout,
        variants=tuple(name.strip() for name in variants.split(",") if name.strip()),
        quota=quota,
        batch_list_forbidden=batch_list_forbidden,
    )
    server = Emulator(
        settings,
        faults=faults,
        data=data,
        origin_dir=origin_dir,
        host=host,
        port=port,
        batch_port=batch_port,
        origin_port=origin_port,
    )
    try:
        server.start()
    except OSError as error:
        raise ConfigError(
            f"emulator cannot listen on {host}: {error}; choose other ports "
            "with --port, --batch-port and --origin-port"
        ) from error

    click.echo(
        f"Emulator serving; point migrator at it with:\n"
        f"  export MIGRATOR_API_URL={server.main_url}\n"
        f"  export MIGRATOR_BATCH_URL={server.batch_url}\n"
        f"  export CLOUDFLARE_ACCOUNT_ID={server.account_id}\n"
        f"  export CLOUDFLARE_API_TOKEN={server.api_token}\n"
        f"Image origin: {server.origin_url}  Stats: {server.base_url}/_emulator/stats\n"
        f"Press Ctrl-C to stop.",
        err=True,
    )
    _wait_for_signal()
    server.stop()
    logger.info("emulator stopped")


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {
        sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
