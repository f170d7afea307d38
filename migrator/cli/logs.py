"""Logging and progress for the command line: what reaches stderr, and how.

Log lines go to stderr, as text or as JSON objects one per line, and optionally to a
file as well. On a terminal they scroll above the progress bar instead of tearing
it, and level names are coloured; when stderr is a pipe or a file (cron, CI) there
is no bar and no colour, so the output stays greppable.

Only the command line configures logging; every other module just logs to
``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import IO, TYPE_CHECKING, Any

import click
from tqdm import tqdm

ROOT_LOGGER = "migrator"

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
_DEBUG_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

_COLOURS = {
    logging.DEBUG: "\x1b[2m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_RESET = "\x1b[0m"

# Attributes every LogRecord has; whatever else a record carries came from
# ``extra=`` and belongs in a JSON line as a field of its own.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}

_progress_allowed = False


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, extras.

    ``time`` is RFC 3339 UTC with milliseconds; fields passed with ``extra=`` are
    added as they are (anything JSON cannot encode as its ``str``); a traceback,
    when there is one, goes in ``exception``.
    """

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class ColourFormatter(logging.Formatter):
    """A text formatter that colours the whole line by level (warnings and worse)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        colour = _COLOURS.get(record.levelno)
        return f"{colour}{line}{_RESET}" if colour else line


if TYPE_CHECKING:
    _StreamHandler = logging.StreamHandler[IO[str]]
else:
    # StreamHandler can be subscripted at run time only from Python 3.11 on.
    _StreamHandler = logging.StreamHandler


class TerminalHandler(_StreamHandler):
    """A stream handler whose lines scroll above any tqdm bar on the same stream.

    tqdm clears its bars, lets the line through, and redraws them; with no bar on
    screen that is a plain write.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            with tqdm.external_write_mode(file=self.stream):
                self.stream.write(line + self.terminator)
                self.flush()
        except Exception:
            self.handleError(record)


def is_terminal(stream: IO[str]) -> bool:
    """Whether a stream is an interactive terminal (``isatty`` that can fail)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(level: int, log_file: str | None, log_format: str) -> None:
    """Send migrator's log records to stderr at ``level``, and to ``log_file``.

    ``log_format`` is ``"text"`` or ``"json"`` (one object per line) and applies to
    both destinations. The file also receives INFO lines when ``-q`` keeps them off
    stderr, so that a quiet cron job still leaves a full log behind. Progress bars
    are allowed only when stderr is a terminal and the level shows INFO.
    """
    global _progress_allowed

    stderr = sys.stderr
    on_terminal = is_terminal(stderr)
    colour = on_terminal and log_format == "text" and "NO_COLOR" not in os.environ
    _progress_allowed = on_terminal and level <= logging.INFO

    console = TerminalHandler(stderr)
    console.setLevel(level)
    console.setFormatter(_formatter(log_format, level, colour=colour))
    handlers: list[logging.Handler] = [console]

    if log_file:
        file_level = min(level, logging.INFO)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setLevel(file_level)
        to_file.setFormatter(_formatter(log_format, file_level, colour=False))
        handlers.append(to_file)

    root = logging.getLogger(ROOT_LOGGER)
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(min(handler.level for handler in handlers))
    root.propagate = False


def progress_allowed() -> bool:
    """Whether the current command may draw a progress bar on stderr."""
    return _progress_allowed


def progress_bar(total: int | None, description: str, unit: str = "image") -> tqdm[Any]:
    """Start a progress bar on stderr, or a silent stand-in when bars are off.

    The stand-in accepts the same calls (``update``, ``set_postfix``, ``close``)
    and draws nothing, so callers never test for a terminal themselves.
    """
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=not _progress_allowed,
        dynamic_ncols=True,
        leave=False,
    )


def echo(text: str) -> None:
    """Print a line of a report on stdout; on a terminal, above any progress bar."""
    with tqdm.external_write_mode(file=sys.stdout):
        click.echo(text)


def _formatter(log_format: str, level: int, *, colour: bool) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    pattern = _DEBUG_TEXT_FORMAT if level <= logging.DEBUG else _TEXT_FORMAT
    formatter_class = ColourFormatter if colour else logging.Formatter
    return formatter_class(pattern, datefmt=_DATE_FORMAT)
