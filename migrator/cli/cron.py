"""What ``migrator run`` needs to run unattended: a summary file for monitoring.

The run lock itself is ``migrator.lock``; ``--max-duration`` and ``--max-items``
belong to the runner. This module adds ``--summary-json FILE``: after every run
that started, the file holds that run's summary as one JSON object, replaced
atomically so that a monitor never reads half of it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from migrator.runner import RunSummary
from migrator.store import describe

F = TypeVar("F", bound=Callable[..., Any])


def summary_json_option(function: F) -> F:
    """``--summary-json FILE``: where a run writes its summary for monitoring."""
    return click.option(
        "--summary-json",
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        envvar="MIGRATOR_SUMMARY_JSON",
        help="Write the run's summary here as JSON (counts by outcome, duration, "
        "throughput, error codes, exit reason and code), replacing the file "
        "atomically.  [env: MIGRATOR_SUMMARY_JSON]",
    )(function)


def summary_document(summary: RunSummary, db: str) -> dict[str, Any]:
    """The summary a run writes: the runner's figures, and where and when."""
    finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {
        **summary.as_dict(),
        "job_table": describe(db),
        "host": socket.gethostname(),
        "finished_at": finished.replace("+00:00", "Z"),
    }


def write_summary(path: Path, summary: RunSummary, db: str) -> None:
    """Replace ``path`` with the run's summary, all at once."""
    text = json.dumps(summary_document(summary, db), indent=2, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        # mkstemp makes the file private; a summary holds nothing secret, and
        # the monitor reading it often runs as another user.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
