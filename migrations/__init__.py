"""Alembic migrations of the job table, applied when a job table is opened."""
