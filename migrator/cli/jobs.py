"""Commands that fill and inspect the job table: load, status, db."""

from __future__ import annotations
