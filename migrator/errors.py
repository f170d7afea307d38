"""The exceptions migrator raises, and the exit code each one ends a command with.

Every error a user can meet is a ``MigratorError``: its message says what happened,
which value caused it and what to do next, in one line. The command line turns it
into that line on stderr and the exit code of its class; a traceback is printed only
at debug verbosity.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The outcomes a script calling migrator must be able to tell apart."""

    OK = 0
    """Everything asked for was done."""
    FAILURES = 1
    """Finished, but some rows failed for a permanent reason."""
    USAGE = 2
    """Bad command line or bad manifest rows; nothing was lost."""
    FATAL = 3
    """Stopped by configuration, authentication, quota or the circuit breaker."""
    MORE_WORK = 4
    """Stopped at a cap (--max-duration, --max-items) with work remaining."""
    LOCKED = 5
    """Another run holds the job table's lock."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C or SIGTERM after writing every outcome back."""


class MigratorError(Exception):
    """Base class of every error migrator reports to a user."""

    exit_code: ExitCode = ExitCode.FATAL


class ConfigError(MigratorError):
    """A setting is missing or invalid: credentials, URLs, options."""


class ManifestError(MigratorError):
    """A manifest cannot be read at all (missing file, unknown format)."""

    exit_code = ExitCode.USAGE


class StoreError(MigratorError):
    """The job table cannot be opened, upgraded or written."""


class LockedError(MigratorError):
    """Another process is running migrations against the same job table."""

    exit_code = ExitCode.LOCKED


class RunStoppedError(MigratorError):
    """A run stopped before the table was drained, for a reason a user must fix."""


class CircuitOpenError(RunStoppedError):
    """Most recent attempts failed, so the run stopped instead of burning the table."""


class ApiError(MigratorError):
    """Cloudflare answered a request with a failure, or with something unreadable.

    ``code`` is Cloudflare's error code as a string of digits (the one string code
    seen in the wild, ``"103"``, stays as it came), ``None`` when the answer had no
    failure envelope; ``http_status`` is the response's status.
    """

    def __init__(self, message: str, *, code: str | None, http_status: int) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class TransientApiError(ApiError):
    """A failure worth retrying later: 5xx, 5408, 5433, 5450, storage errors."""


class RateLimitedError(TransientApiError):
    """HTTP 429: too many requests; ``retry_after`` in seconds, when given."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None,
        http_status: int,
        retry_after: float | None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.retry_after = retry_after


class PermanentApiError(ApiError):
    """A failure that repeating the same request cannot fix: bad image, bad ID."""


class NotFoundError(PermanentApiError):
    """5404: no image has that ID."""


class AlreadyExistsError(PermanentApiError):
    """5409: an image with that custom ID already exists; uploads never overwrite."""


class ForbiddenEndpointError(PermanentApiError):
    """Code 103: the host refuses this endpoint (seen for list v2 on the batch host)."""


class AuthError(ApiError):
    """10000, or 401/403 without a known code: the token was refused."""


class AccountStoppedError(ApiError):
    """5403 or 5453: the account cannot take images (not entitled, or storage full)."""


class TransportError(MigratorError):
    """The request got no HTTP answer: refused, reset, timed out.

    ``may_have_reached`` is true when Cloudflare may have received the whole request
    and acted on it (the answer was lost), false when it certainly was not sent.
    """

    def __init__(self, message: str, *, may_have_reached: bool) -> None:
        super().__init__(message)
        self.may_have_reached = may_have_reached


class SourceError(MigratorError):
    """An image's source cannot be read: a local file, or a URL fetched locally.

    ``code`` is migrator's own word for the cause (``file-unreadable``,
    ``origin-404``, ...); ``permanent`` says whether trying again could help.
    """

    def __init__(self, message: str, *, code: str, permanent: bool) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent
