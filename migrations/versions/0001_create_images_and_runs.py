"""Create the images and runs tables.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Revisions spell their types out rather than import the live schema, so that a
# later change to migrator.store.schema cannot rewrite history.

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_kind", sa.String(8), nullable=False),
        sa.Column("custom_id", sa.Text),
        sa.Column("image_id", sa.Text),
        sa.Column("metadata", sa.Text),
        sa.Column("require_signed_urls", sa.Boolean, nullable=False),
        sa.Column("creator", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("in_doubt", sa.Boolean, nullable=False),
        sa.Column("error_code", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("http_status", sa.Integer),
        sa.Column("variants", sa.Text),
        sa.Column("uploaded_at", sa.DateTime(timezone=True)),
        sa.Column("manifest", sa.Text),
        sa.Column("line", sa.Integer),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_images_key", "images", ["key"], unique=True)
    op.create_index(
        "ix_images_state_next_attempt_at", "images", ["state", "next_attempt_at"]
    )
    op.create_index("ix_images_state_error_code", "images", ["state", "error_code"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("exit_reason", sa.Text),
        sa.Column("counts", sa.Text),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("throttled", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("images")
