"""Alembic's entry point: upgrade the job table on the connection migrator hands over.

migrator opens the job table itself and passes its connection in
``config.attributes["connection"]``, so the upgrade runs inside the store's own
transaction on the one SQLite connection the store allows.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from migrator.store.schema import metadata


def run_migrations_online() -> None:
    """Apply pending revisions on the connection provided by the store."""
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "the job table is upgraded by 'migrator db upgrade', not by alembic alone"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most columns in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
