"""Which module defines each command, so that a command imports only what it needs.

``migrator load`` should not pay for the emulator's web stack, nor ``status`` for
the HTTP client: each module is imported when one of its commands is asked for,
and registers its commands on the group as it is imported.
"""

from __future__ import annotations

import importlib

MODULES = {
    "db": "migrator.cli.jobs",
    "demo": "migrator.cli.demo",
    "emulator": "migrator.cli.emulator",
    "export": "migrator.cli.reports",
    "failures": "migrator.cli.reports",
    "load": "migrator.cli.jobs",
    "plan": "migrator.cli.plan",
    "retry": "migrator.cli.reports",
    "run": "migrator.cli.run",
    "status": "migrator.cli.jobs",
    "verify": "migrator.cli.verify",
}
"""Command name to the module that registers it."""


def import_command(name: str) -> None:
    """Import the module that defines command ``name``, if there is one."""
    module = MODULES.get(name)
    if module is not None:
        importlib.import_module(module)


def import_all() -> None:
    """Import every command module: for the command list and for tests."""
    for module in sorted(set(MODULES.values())):
        importlib.import_module(module)
