"""Fixtures shared by every test module live in tests/fixtures/, one per topic."""

pytest_plugins = [
    "tests.fixtures.store",
    "tests.fixtures.emulator",
]
