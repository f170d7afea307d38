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
