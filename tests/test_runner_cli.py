"""``migrator run`` through click: credentials, options, loading, exit codes."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from migrator.cli import _register_commands, cli
from migrator.cli.run import Duration
from migrator.emulator import Emulator
from migrator.errors import ExitCode
from tests.fixtures.emulator import LocalOrigin


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    _register_commands()
    monkeypatch.delenv("CLOUDFLARE_ACCOUNT_ID", raising=False)
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    return CliRunner()


def emulator_options(emulator: Emulator, tmp_path: Path) -> list[str]:
    return [
        "--db",
        str(tmp_path / "jobs.db"),
        "--api-url",
        emulator.main_url,
        "--batch-url",
        emulator.batch_url,
        "--account-id",
        emulator.account_id,
        "--workers",
        "4",
    ]


def test_help_shows_examples_and_the_emulator(invoke: CliRunner) -> None:
    result = invoke.invoke(cli, ["run", "--help"])

    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "--batch-url" in result.output


def test_a_missing_account_id_is_a_configuration_error(
    invoke: CliRunner, tmp_path: Path
) -> None:
    result = invoke.invoke(cli, ["run", "--db", str(tmp_path / "j.db")])

    assert isinstance(result.exception, Exception)
    assert getattr(result.exception, "exit_code", None) == ExitCode.FATAL
    assert "CLOUDFLARE_ACCOUNT_ID" in str(result.exception)


def test_a_missing_api_token_is_a_configuration_error(
    invoke: CliRunner, tmp_path: Path
) -> None:
    result = invoke.invoke(
        cli, ["run", "--db", str(tmp_path / "j.db"), "--account-id", "abc"]
    )

    assert "CLOUDFLARE_API_TOKEN" in str(result.exception)


def test_the_token_file_is_read_and_a_wrong_token_stops_with_exit_3(
    invoke: CliRunner, emulator: Emulator, origin: LocalOrigin, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("not-the-token\n")
    manifest = tmp_path / "urls.txt"
    manifest.write_text(origin.synthetic(5, 5) + "\n")
    options = [*emulator_options(emulator, tmp_path), "--api-token-file"]

    result = invoke.invoke(
        cli, ["run", str(manifest), *options, str(tmp_path / "token")]
    )

    assert getattr(result.exception, "exit_code", None) == ExitCode.FATAL
    assert "not-the-token" not in result.output


def test_run_loads_manifests_then_uploads_them(
    invoke: CliRunner,
    emulator: Emulator,
    origin: LocalOrigin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", emulator.api_token)
    manifest = tmp_path / "urls.txt"
    manifest.write_text("".join(origin.synthetic(5, 5 + n) + "\n" for n in range(5)))

    result = invoke.invoke(
        cli,
        ["run", str(manifest), *emulator_options(emulator, tmp_path)],
        standalone_mode=False,
    )

    assert result.exception is None, result.output
    assert result.return_value == ExitCode.OK
    assert "5 uploaded" in result.output
    assert emulator.stats()["images"] == 5


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("45s", 45.0), ("30m", 1800.0), ("2h", 7200.0)]
)
def test_durations_take_units(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


def test_a_duration_without_a_number_is_refused() -> None:
    with pytest.raises(click.BadParameter):
        Duration().convert("soon", None, None)
