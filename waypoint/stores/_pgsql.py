"""The SQL ``PostgresStore`` sends, and how its rows become journal values.

Every statement here is one round trip. Leases are set and compared on the
server's clock; journal times come from the runner (see ``LEASE_END``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from waypoint.journal import Checkpoint, Execution, StepFailure, failure_from_row

EXECUTION_COLUMNS = (
    "id, workflow, status, input, output, error, created_at, updated_at, "
    "completed_at, owner, lease_expires_at"
)

# Leases are set and compared on the server's clock, one clock for every
# host. Journal times (``at``, ``created_at``, a step's start and end) come
# from the runner, as on SQLite, so that a history merges its events and
# checkpoints on one clock.
LEASE_END = "now() + make_interval(secs => $3::float8)"

CREATE_EXECUTION = f"""
WITH created AS (
    INSERT INTO executions
        (id, workflow, status, input, owner, lease_expires_at, created_at,
         updated_at)
    VALUES ($1, $2, 'running', $4, $5, {LEASE_END},
            to_timestamp($6::float8), to_timestamp($6::float8))
    ON CONFLICT (id) DO NOTHING
    RETURNING id, created_at
)
INSERT INTO events (execution_id, kind, payload, at)
SELECT id, 'execution_started', $4, created_at FROM created
RETURNING seq
"""

# FOR SHARE holds the execution row against a concurrent claim until this
# statement commits, and re-reads the owner after waiting for one: the new
# owner either sees this checkpoint when it loads, or this write is refused.
# $3 to $9 are a Checkpoint's fields, in its order.
RECORD_STEP = """
INSERT INTO steps
    (execution_id, position, step, args_hash, attempt, result, started_at,
     completed_at)
SELECT $1, $3, $4, $5, $6, $7, to_timestamp($8::float8), to_timestamp($9::float8)
WHERE EXISTS (
    SELECT 1 FROM executions WHERE id = $1 AND owner = $2 FOR SHARE
)
"""

#: What the server answers when the owner check let nothing through.
NOTHING_INSERTED = "INSERT 0 0"

# An attempt number is written once per position and kind, so replaying this
# statement after a lost reply cannot write the same failure twice.
RECORD_FAILURE = """
WITH owned AS (
    SELECT 1 FROM executions WHERE id = $1 AND owner = $2 FOR SHARE
), written AS (
    INSERT INTO events
        (execution_id, kind, position, step, attempt, args_hash, payload, at)
    SELECT $1, $3, $4, $5, $6, $7, $8, to_timestamp($9::float8) FROM owned
    WHERE NOT EXISTS (
        SELECT 1 FROM events
        WHERE execution_id = $1 AND position = $4 AND attempt = $6 AND kind = $3
    )
)
SELECT EXISTS (SELECT 1 FROM owned)
"""

FINISH = """
WITH done AS (
    UPDATE executions
    SET status = $3, output = $4, error = $5,
        completed_at = to_timestamp($8::float8),
        updated_at = to_timestamp($8::float8), owner = NULL,
        lease_expires_at = NULL
    WHERE id = $1 AND owner = $2 AND status = 'running'
    RETURNING id, completed_at
)
INSERT INTO events (execution_id, kind, payload, at)
SELECT id, $6, $7, completed_at FROM done
RETURNING seq
"""

TAKE_LEASE = f"""
WITH taken AS (
    UPDATE executions
    SET owner = $2, lease_expires_at = {LEASE_END},
        updated_at = to_timestamp($5::float8)
    WHERE id = $1
    RETURNING {EXECUTION_COLUMNS}
), resumed AS (
    INSERT INTO events (execution_id, kind, payload, at)
    SELECT id, 'execution_resumed', $4, updated_at FROM taken
)
SELECT * FROM taken
"""

# Checkpoints and failed attempts in one query, in position order.
LOAD_STEPS = """
SELECT 'step_completed' AS kind, position, step, attempt, args_hash, result,
       extract(epoch FROM started_at)::float8, extract(epoch FROM completed_at)::float8,
       0::bigint AS seq
FROM steps WHERE execution_id = $1
UNION ALL
SELECT kind, position, step, attempt, args_hash, payload, NULL,
       extract(epoch FROM at)::float8, seq
FROM events
WHERE execution_id = $1 AND kind IN ('step_retried', 'step_failed')
ORDER BY 2, 9
"""

# SKIP LOCKED: a row another worker is taking is passed over, not waited
# for, so concurrent callers split the expired executions between them.
CLAIM_EXPIRED = f"""
WITH expired AS (
    SELECT id FROM executions
    WHERE status = 'running' AND (owner IS NULL OR lease_expires_at < now())
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE executions AS e
SET owner = $1, lease_expires_at = {LEASE_END}
FROM expired
WHERE e.id = expired.id
RETURNING e.id
"""

RENEW = f"""
UPDATE executions SET lease_expires_at = {LEASE_END}
WHERE id = ANY($2::text[]) AND owner = $1 AND status = 'running'
RETURNING id
"""


def execution(row: Mapping[str, Any]) -> Execution:
    return Execution.from_row(
        execution_id=row["id"],
        workflow=row["workflow"],
        status=row["status"],
        input=row["input"],
        output=row["output"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
        owner=row["owner"],
        lease_expires_at=row["lease_expires_at"],
    )


async def send_checkpoint(
    conn: Any, execution_id: str, owner: str, checkpoint: Checkpoint
) -> str:
    """Run the checkpoint write on ``conn``; return its command tag.

    ``execute``, not ``fetchval``: the tag says whether a row was written,
    and no row has to come back and be decoded.
    """
    status: str = await conn.execute(RECORD_STEP, execution_id, owner, *checkpoint)
    return status


def epoch(value: datetime) -> float:
    return value.timestamp()


def steps(rows: Sequence[Any]) -> tuple[list[Checkpoint], list[StepFailure]]:
    """The rows of ``LOAD_STEPS`` as checkpoints and failed attempts."""
    checkpoints, failures = [], []
    for kind, pos, step, attempt, args_hash, payload, started, at, _ in rows:
        if kind == "step_completed":
            checkpoints.append(
                Checkpoint(pos, step, args_hash, attempt, payload, started, at)
            )
        else:
            failures.append(
                failure_from_row(pos, step, args_hash, attempt, payload, kind)
            )
    return checkpoints, failures
