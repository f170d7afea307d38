"""The ``migrator`` command line: one click group, one module per family of commands.

Only this package talks to the terminal: it configures logging, turns a
``MigratorError`` into one line on stderr and its exit code, and keeps tracebacks for
``-vv``.
"""

from __future__ import annotations

import logging
import sys

import click

from migrator import __version__
from migrator.cli import commands
from migrator.cli.logs import configure_logging
from migrator.errors import ExitCode, MigratorError

logger = logging.getLogger(__name__)


class LazyGroup(click.Group):
    """A group whose commands are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        commands.import_all()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        commands.import_command(cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="migrator")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log lines: -v for every outcome, -vv for debug and tracebacks.",
)
@click.option(
    "-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr, no bar."
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, writable=True),
    envvar="MIGRATOR_LOG_FILE",
    help="Also append log lines to this file.  [env: MIGRATOR_LOG_FILE]",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="MIGRATOR_LOG_FORMAT",
    help="json writes one JSON object per line.  [env: MIGRATOR_LOG_FORMAT]",
)
@click.pass_context
def cli(
    ctx: click.Context,
    verbose: int,
    quiet: bool,
    log_file: str | None,
    log_format: str,
) -> None:
    """Move image libraries into Cloudflare Images, exactly once.

    Load manifests into a job table, upload every row through the Images batch
    API, resume after any interruption, and prove the result.

    \b
    Examples:
      migrator demo                          # a whole migration, offline
      migrator load urls.txt photos.csv      # fill the job table
      migrator run                           # upload everything pending
      migrator status --json                 # counts for a script
    """
    level = (
        logging.WARNING
        if quiet
        else (logging.INFO, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    ctx.obj = {"verbose": verbose, "quiet": quiet}
    configure_logging(level=level, log_file=log_file, log_format=log_format)


def _register_commands() -> None:
    """Attach every command module's commands to the group."""
    commands.import_all()


def main() -> None:
    """Entry point of the console script: run the group, map errors to exit codes."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except MigratorError as error:
        # The traceback is for -vv only; everyone else gets the one line below.
        if logger.isEnabledFor(logging.DEBUG):
            logger.exception("migrator stopped")
        click.echo(f"Error: {error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)
