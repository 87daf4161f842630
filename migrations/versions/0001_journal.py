"""The journal: executions, their checkpoints, and their append-only events.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite keeps times as epoch seconds (REAL): cheap to write and to compare on
# the hot path. PostgreSQL keeps them as timestamptz, set from the server's
# clock so that leases compare on one clock across hosts.
TIME = sa.DateTime(timezone=True).with_variant(sa.Float(), "sqlite")
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

EVENT_KINDS = (
    "execution_started",
    "execution_resumed",
    "step_retried",
    "step_failed",
    "execution_completed",
    "execution_failed",
)


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("workflow", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("completed_at", TIME, nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed')",
            name="ck_executions_status",
        ),
        # Clustered on the id: the owner check on every step is one lookup.
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_executions_status_lease", "executions", ["status", "lease_expires_at"]
    )
    op.create_index("ix_executions_workflow", "executions", ["workflow"])

    # One row per completed step, keyed by its position: the primary key is
    # what holds a position to one checkpoint (the database, not only the
    # code), and on SQLite the table is clustered on it (WITHOUT ROWID), so
    # recording a step writes one B-tree and replay reads one range.
    #
    # No foreign key to executions: the write that records a step checks, in
    # the same statement, that the execution exists and is owned by the
    # writer, which is stronger; a foreign key would add a second lookup and
    # a row lock to every step (about 10% of a step on PostgreSQL).
    op.create_table(
        "steps",
        sa.Column("execution_id", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("args_hash", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("completed_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "position", name="pk_steps"),
        sqlite_with_rowid=False,
    )

    # Everything else that happens to an execution, in order: its start,
    # resumes, failed attempts and its one terminal event.
    op.create_table(
        "events",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column(
            "execution_id",
            sa.Text(),
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("step", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("args_hash", sa.Text(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("at", TIME, nullable=False),
        sa.CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in EVENT_KINDS) + ")",
            name="ck_events_kind",
        ),
    )
    op.create_index("ix_events_execution", "events", ["execution_id", "seq"])
    terminal = sa.text("kind IN ('execution_completed', 'execution_failed')")
    op.create_index(
        "uq_events_terminal",
        "events",
        ["execution_id"],
        unique=True,
        sqlite_where=terminal,
        postgresql_where=terminal,
    )


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("steps")
    op.drop_table("executions")
