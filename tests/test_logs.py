"""Log lines on stderr and in a file, text or JSON, beside or without a bar."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.cli.logs import configure_logging, progress_allowed, progress_bar

logger = logging.getLogger("migrator.test")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger("migrator")
    handlers, level, propagate = root.handlers[:], root.level, root.propagate
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level, root.propagate = handlers, level, propagate


def capture_stderr(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO) -> io.StringIO:
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return stream


def test_json_lines_carry_time_level_logger_message_and_extras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = capture_stderr(monkeypatch, io.StringIO())
    configure_logging(logging.INFO, None, "json")

    logger.info("image %s: uploaded", "a/b.jpg", extra={"event": "done", "row": 7})
    logger.debug("image %s: not shown at INFO", "a/b.jpg")

    (line,) = stderr.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "migrator.test"
    assert entry["message"] == "image a/b.jpg: uploaded"
    assert entry["event"] == "done"
    assert entry["row"] == 7
    assert entry["time"].endswith("Z")


def test_json_lines_keep_the_traceback_in_one_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = capture_stderr(monkeypatch, io.StringIO())
    configure_logging(logging.INFO, None, "json")

    try:
        raise ValueError("bad byte")
    except ValueError:
        logger.exception("manifest %s: unreadable", "a.csv")

    (line,) = stderr.getvalue().splitlines()
    assert "ValueError: bad byte" in json.loads(line)["exception"]


def test_quiet_keeps_info_off_stderr_but_not_out_of_the_log_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stderr = capture_stderr(monkeypatch, io.StringIO())
    log_file = tmp_path / "run.log"
    configure_logging(logging.WARNING, str(log_file), "text")

    logger.info("run 1: 10 done")
    logger.warning("image x.jpg: retry in 2 s")

    assert "10 done" not in stderr.getvalue()
    assert "retry in 2 s" in stderr.getvalue()
    written = log_file.read_text()
    assert "INFO    run 1: 10 done" in written
    assert "WARNING image x.jpg: retry in 2 s" in written


def test_debug_lines_name_their_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = capture_stderr(monkeypatch, io.StringIO())
    configure_logging(logging.DEBUG, None, "text")

    logger.debug("token: renewed")

    assert "DEBUG   migrator.test: token: renewed" in stderr.getvalue()


def test_no_bar_and_no_colour_when_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = capture_stderr(monkeypatch, io.StringIO())
    configure_logging(logging.INFO, None, "text")

    with progress_bar(total=10, description="upload") as bar:
        bar.update(5)
        logger.error("image x.jpg: failed")

    assert not progress_allowed()
    assert "\x1b[" not in stderr.getvalue()
    assert "%" not in stderr.getvalue()
    assert "ERROR   image x.jpg: failed" in stderr.getvalue()


def test_on_a_terminal_lines_scroll_above_the_bar_in_colour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = capture_stderr(monkeypatch, FakeTerminal())
    configure_logging(logging.INFO, None, "text")

    with progress_bar(total=10, description="upload") as bar:
        bar.update(5)
        logger.error("image x.jpg: failed")

    assert progress_allowed()
    output = stderr.getvalue()
    assert "\x1b[31m" in output
    line_at = output.index("image x.jpg: failed")
    assert output.index("0/10") < line_at < output.index("5/10")


def test_quiet_draws_no_bar_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    capture_stderr(monkeypatch, FakeTerminal())
    configure_logging(logging.WARNING, None, "text")

    assert not progress_allowed()


def test_no_color_in_the_environment_turns_colour_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = capture_stderr(monkeypatch, FakeTerminal())
    monkeypatch.setenv("NO_COLOR", "1")
    configure_logging(logging.INFO, None, "text")

    logger.error("image x.jpg: failed")

    assert "\x1b[" not in stderr.getvalue()
