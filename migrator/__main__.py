"""Run the command line as ``python -m migrator``."""

from migrator.cli import main

main()
