"""The command line's surface: help, version, exit codes."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from migrator.cli import _register_commands, cli


def every_command() -> list[list[str]]:
    """The path of every command under the group, subcommands included."""
    _register_commands()
    paths: list[list[str]] = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk(command, [*prefix, name])
            else:
                paths.append([*prefix, name])

    walk(cli, [])
    return paths


def test_help_lists_examples() -> None:
    _register_commands()
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output


@pytest.mark.parametrize("path", every_command(), ids=" ".join)
def test_every_command_has_a_short_summary_and_examples(path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])

    assert result.exit_code == 0
    assert "Examples:" in result.output
    command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    # Whole in the group's list of commands on an 80-column terminal.
    assert not command.get_short_help_str(limit=66).endswith("...")


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "migrator" in result.output
