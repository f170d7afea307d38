"""What an emulator is configured with: the account, its tokens and its limits.

One frozen object built once (by the command line or the Python API) and read by
every other emulator module; only fault injection changes at run time, and it has
its own object in ``faults``.
"""

from __future__ import annotations

import dataclasses

DEFAULT_ACCOUNT_ID = "023e105f4ecef8ad9ca31a8372d0c353"
"""The account ID used when none is given (Cloudflare's own documentation example)."""
DEFAULT_ACCOUNT_HASH = "EmuLat0rAccountHash0Q"
"""The account hash in delivery URLs and batch tokens when none is given."""
DEFAULT_API_TOKEN = "emulator-api-token"  # noqa: S105 (public, local only)
"""The one API token accepted when none is given."""


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` in any ``window`` seconds; going over blocks for
    ``block`` seconds (0: refuse only the requests over the limit)."""

    requests: int
    window: float
    block: float = 0.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything an emulator is started with, with Cloudflare's values as defaults.

    Rate limits follow the reference: 200 requests a second per batch token; on
    the main API 200 requests a second per client address, and 1200 requests in
    five minutes per API token, going over blocking every call of that token for
    five minutes.
    """

    account_id: str = DEFAULT_ACCOUNT_ID
    account_hash: str = DEFAULT_ACCOUNT_HASH
    api_tokens: tuple[str, ...] = (DEFAULT_API_TOKEN,)
    batch_token_ttl: float = 3600.0
    batch_rate: RateLimit = RateLimit(200, 1.0)
    api_rate: RateLimit = RateLimit(1200, 300.0, block=300.0)
    address_rate: RateLimit = RateLimit(200, 1.0)
    allowed_hosts: tuple[str, ...] = ()
    allow_any_host: bool = False
    fetch_timeout: float = 30.0
    variants: tuple[str, ...] = ("public",)
    quota: int = 10_000_000
    batch_list_forbidden: bool = False
    signing_key: str = ""
    """Secret signing batch tokens; empty means a random one per process (or the
    one kept in the ``--data`` file)."""
