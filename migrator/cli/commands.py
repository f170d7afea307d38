"""Import every command module so that each registers its commands on the group."""

from migrator.cli import demo, emulator, jobs, plan, reports, run, verify  # noqa: F401
