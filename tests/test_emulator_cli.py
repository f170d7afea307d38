"""``migrator emulator``: its help, and a real start and stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from migrator.cli import _register_commands, cli


def test_help_documents_every_option_with_its_environment_variable() -> None:
    _register_commands()
    result = CliRunner().invoke(cli, ["emulator", "--help"], terminal_width=200)

    assert result.exit_code == 0
    command = cli.commands["emulator"]
    for param in command.params:
        if param.name == "help":
            continue
        assert param.help, param.name
        assert "[env: MIGRATOR_EMULATOR_" in param.help, param.name
    assert "Examples:" in result.output
    assert "error_rate" in result.output


def test_bad_fault_names_are_a_usage_error() -> None:
    _register_commands()
    result = CliRunner().invoke(cli, ["emulator", "--faults", "eror_rate=0.1"])

    assert result.exit_code == 2
    assert "unknown fault 'eror_rate'" in result.output


@pytest.mark.slow
def test_emulator_command_serves_until_sigterm(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "migrator", "emulator", "--port", "0"]
    command += ["--origin-port", "0", "--data", str(tmp_path / "emu.db")]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MIGRATOR_EMULATOR_API_TOKENS": "one two"},
    )
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(3)]
        api_url = re.search(r"MIGRATOR_API_URL=(\S+)", "".join(lines))
        assert api_url is not None, lines
        root = api_url.group(1).removesuffix("/client/v4")

        stats = httpx.get(f"{root}/_emulator/stats")
        token = httpx.get(
            f"{api_url.group(1)}/accounts/023e105f4ecef8ad9ca31a8372d0c353"
            "/images/v1/batch_token",
            headers={"Authorization": "Bearer two"},
        )
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)

    assert stats.json()["requests_total"] == 0
    assert token.status_code == 200
    assert code == 0
    assert (tmp_path / "emu.db").exists()
