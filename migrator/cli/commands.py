"""Import every command module so that each registers its commands on the group."""

from migrator.cli import jobs, reports  # noqa: F401
