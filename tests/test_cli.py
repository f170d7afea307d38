"""The command line's surface: help, version, exit codes."""

from click.testing import CliRunner

from migrator.cli import _register_commands, cli


def test_help_lists_examples() -> None:
    _register_commands()
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "migrator" in result.output
