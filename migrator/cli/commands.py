"""Import every command module so that each registers its commands on the group."""

from migrator.cli import audit, demo, emulator, jobs, reports, run  # noqa: F401
