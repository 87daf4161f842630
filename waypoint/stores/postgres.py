"""``PostgresStore``: the production journal, shared by many workers.

Workers on many hosts share one database, and the database is the only
coordinator: leases are compared on the server's clock, a checkpoint is held
to one row per position by a unique index, and ``claim_expired`` hands each
expired execution to exactly one worker through ``FOR UPDATE SKIP LOCKED``.

Every call runs on a connection from a small pool (``_pgpool``) and sends the
statements of ``_pgsql``. A call whose connection dies (a killed backend, a
server restart) is retried on a fresh connection with bounded backoff; the
writes are written so that replaying one whose first commit may have landed
changes nothing (see ``record_step``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from waypoint import _json
from waypoint.errors import (
    ConfigurationError,
    ExecutionNotFound,
    InternalError,
    SchemaVersionError,
    StoreError,
    WaypointError,
)
from waypoint.hooks import WriteCut, active_write_fault
from waypoint.journal import (
    Checkpoint,
    Claim,
    Execution,
    ExecutionStatus,
    Journal,
    StepFailure,
    events_from_rows,
    resumed_payload,
)
from waypoint.stores import _pgsql as sql
from waypoint.stores import redact
from waypoint.stores._pgpool import ConnectionPool
from waypoint.stores.base import (
    Store,
    checkpoint_conflict,
    lease_lost,
    not_found,
)
from waypoint.stores.schema import SCHEMA_REVISION, alembic_config, check_revision

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigurationError(
        "PostgresStore needs asyncpg: pip install 'waypoint-sdk[postgres]'"
    ) from exc

__all__ = ["RETRY_DELAYS", "PostgresStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Pauses (seconds) before each retry of a call whose connection failed. About
#: 4.75 s in all: enough to ride out a restart of a quiet server, short enough
#: that a real outage surfaces as ``StoreError`` within seconds. The doubling
#: keeps many workers that lost the server together from reconnecting in step.
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 1.6)

#: How long opening a connection may take before it counts as failed; asyncpg
#: would otherwise wait a minute for an unreachable host.
CONNECT_TIMEOUT = 10.0

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# A lost connection: the statement may or may not have committed.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # asyncpg's protocol, caught mid-operation by a dying connection.
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
# The server rolled the transaction back: nothing of it committed.
_ROLLED_BACK: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
_RETRYABLE = _CONNECTION_LOST + _ROLLED_BACK
# What ``_call`` handles: retries the retryable, words the rest as StoreError.
_DATABASE_ERRORS = (*_RETRYABLE, asyncpg.PostgresError)
#: Attempt numbers of a call: the first, then one per retry.
_ATTEMPTS = tuple(range(1, len(RETRY_DELAYS) + 2))


def _sqlalchemy_url(dsn: str) -> str:
    rest = dsn.partition("://")[2]
    return f"postgresql+asyncpg://{rest}"


def _alembic_upgrade(connection: Any, schema: str | None) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection=connection, schema=schema), "head")


class PostgresStore(Store):
    """A journal in PostgreSQL, shared by any number of workers and hosts.

    ``schema`` puts the journal's tables in that schema (it becomes the pool
    connections' ``search_path``). ``migrate=True`` applies pending Alembic
    migrations when the store opens; otherwise an out-of-date schema raises
    ``SchemaVersionError`` naming the command to run.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        migrate: bool = False,
        min_size: int = 1,
        max_size: int = 10,
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ConfigurationError(
                f"bad PostgreSQL URL {redact(dsn)!r}: write "
                "postgresql://user[:password]@host[:port]/database"
            )
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(
                f"bad schema name {schema!r}: use letters, digits and "
                "underscores, not starting with a digit, at most 63 characters"
            )
        if not 1 <= min_size <= max_size:
            raise ConfigurationError(
                f"pool sizes must satisfy 1 <= min_size <= max_size, not "
                f"min_size={min_size}, max_size={max_size}"
            )
        self._dsn = dsn
        self.dsn = redact(dsn)
        self.schema = schema
        self.migrate = migrate
        self.min_size = min_size
        self.max_size = max_size
        self._settings = dict(server_settings or {})
        if schema is not None:
            self._settings["search_path"] = f'"{schema}"'
        self._pool: Any = None

    def __repr__(self) -> str:
        where = f" schema={self.schema}" if self.schema else ""
        return f"<PostgresStore {self.dsn}{where}>"

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    @property
    def _where(self) -> str:
        return f"{self.dsn} (schema {self.schema})" if self.schema else self.dsn

    async def open(self) -> None:
        if self._pool is not None:
            return

        async def connect() -> Any:
            return await asyncpg.connect(
                self._dsn,
                server_settings=self._settings or None,
                timeout=CONNECT_TIMEOUT,
            )

        pool = ConnectionPool(connect, max_size=self.max_size)
        try:
            await pool.start(self.min_size)
        except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
            await pool.close()
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.dsn}: "
                f"{type(exc).__name__}: {exc}. Check that the server is running "
                "and that the URL's host, port, user and database are right"
            ) from exc
        try:
            await self._ensure_schema(pool)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # The schema ---------------------------------------------------------

    def upgrade_command(self) -> str:
        """The command that brings this store's schema up to date."""
        command = f"waypoint db upgrade --dsn {self.dsn}"
        return f"{command} --schema {self.schema}" if self.schema else command

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None: no journal)."""

        async def op(conn: Any, retrying: bool) -> str | None:
            return await self._revision(conn)

        return await self._call("schema_revision", None, op)

    async def _revision(self, conn: Any) -> str | None:
        try:
            found = await conn.fetchval("SELECT version_num FROM alembic_version")
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return None
        return None if found is None else str(found)

    async def _ensure_schema(self, pool: Any) -> None:
        command = self.upgrade_command()
        try:
            async with pool.acquire() as conn:
                found = await self._revision(conn)
                if not check_revision(found, self._where, command):
                    return
                if not self.migrate:
                    raise SchemaVersionError(
                        f"the journal at {self._where} is at schema revision "
                        f"{found or 'none (no Waypoint tables)'}, not "
                        f"{SCHEMA_REVISION}; run: {command} (or open the "
                        "store with migrate=True)",
                        found=found,
                        expected=SCHEMA_REVISION,
                    )
                # Workers that start together must not all migrate at once.
                lock = f"waypoint-migrate:{self.schema or ''}"
                await conn.execute("SELECT pg_advisory_lock(hashtext($1))", lock)
                try:
                    if check_revision(await self._revision(conn), self._where, command):
                        await self._upgrade()
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", lock)
        except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
            raise StoreError(
                f"cannot check or migrate the schema of {self._where}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def _upgrade(self) -> None:
        # Alembic runs on SQLAlchemy's async engine over asyncpg, in this event
        # loop: run_sync hands it a synchronous connection without a thread.
        from sqlalchemy import pool, text
        from sqlalchemy.ext.asyncio import create_async_engine

        logger.info("applying schema migrations to %s", self._where)
        engine = create_async_engine(
            _sqlalchemy_url(self._dsn), poolclass=pool.NullPool
        )
        try:
            async with engine.connect() as connection:
                if self.schema is not None:
                    await connection.execute(
                        text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                    )
                await connection.run_sync(_alembic_upgrade, self.schema)
                await connection.commit()
        finally:
            await engine.dispose()

    # The one place driver errors are handled ------------------------------

    async def _call(
        self,
        action: str,
        execution_id: str | None,
        op: Callable[[Any, bool], Awaitable[T]],
        *,
        replayable: bool = True,
        failed: BaseException | None = None,
    ) -> T:
        """Run ``op(connection, retrying)``, retrying on a fresh connection.

        ``retrying`` tells ``op`` that an earlier attempt may have committed
        before its connection died. A call that is not ``replayable`` is
        retried only when nothing of it can have committed. ``failed`` is the
        error of a first attempt the caller already made, with the statement
        sent; the loop then carries on from the second.
        """
        pool = self._pool
        if pool is None:
            raise WaypointError(f"the store {self.dsn} is not open")
        attempts = _ATTEMPTS
        if failed is not None:
            await self._pause_or_raise(
                action, execution_id, failed, 1, True, replayable
            )
            attempts = _ATTEMPTS[1:]
        for attempt in attempts:
            sent = False
            try:
                conn = pool.take() or await pool.get()
                sent = True
                try:
                    return await op(conn, attempt > 1)
                finally:
                    pool.put(conn)
            except _DATABASE_ERRORS as exc:
                await self._pause_or_raise(
                    action, execution_id, exc, attempt, sent, replayable
                )
        raise InternalError(f"the retry loop of {action} ended without a result")

    async def _pause_or_raise(
        self,
        action: str,
        execution_id: str | None,
        exc: BaseException,
        attempt: int,
        sent: bool,
        replayable: bool,
    ) -> None:
        """After attempt ``attempt`` failed with ``exc``: wait to retry, or raise."""
        if not isinstance(exc, _RETRYABLE):
            raise self._failure(action, execution_id, exc, attempt, False) from exc
        unknown = sent and not isinstance(exc, _ROLLED_BACK)
        if attempt > len(RETRY_DELAYS) or (unknown and not replayable):
            raise self._failure(action, execution_id, exc, attempt, unknown) from exc
        delay = RETRY_DELAYS[attempt - 1]
        logger.warning(
            "execution %s: %s failed (%s: %s); retry %d of %d on a new "
            "connection in %.2fs",
            execution_id or "-",
            action,
            type(exc).__name__,
            exc,
            attempt,
            len(RETRY_DELAYS),
            delay,
        )
        await asyncio.sleep(delay)

    def _failure(
        self,
        action: str,
        execution_id: str | None,
        exc: BaseException,
        attempts: int,
        unknown: bool,
    ) -> StoreError:
        about = f" of execution {execution_id}" if execution_id else ""
        outcome = (
            "; the connection died after the write was sent, so it may or may "
            "not have been committed"
            if unknown
            else ""
        )
        error = StoreError(
            f"PostgreSQL at {self._where} failed during {action}{about} after "
            f"{attempts} attempt(s): {type(exc).__name__}: {exc}{outcome}. "
            "Check that the server is up; resuming the execution later "
            "continues from its last committed checkpoint",
            execution_id=execution_id,
            action=action,
            attempts=attempts,
            outcome_unknown=unknown,
        )
        return error

    def _not_found(self, execution_id: str) -> ExecutionNotFound:
        return not_found(execution_id, self._where)

    async def _lease_lost_on(
        self, conn: Any, execution_id: str, owner: str
    ) -> WaypointError:
        row = await conn.fetchrow(
            "SELECT owner, status FROM executions WHERE id = $1", execution_id
        )
        if row is None:
            return self._not_found(execution_id)
        return lease_lost(execution_id, owner, row["owner"], row["status"])

    async def _lease_lost(self, execution_id: str, owner: str) -> WaypointError:
        """The error for a write the owner check refused, found out afresh."""

        async def op(conn: Any, retrying: bool) -> WaypointError:
            return await self._lease_lost_on(conn, execution_id, owner)

        return await self._call("record_step", execution_id, op)

    # Executions ---------------------------------------------------------

    async def create_execution(
        self,
        execution_id: str,
        workflow: str,
        input: str,
        owner: str,
        lease_seconds: float,
    ) -> bool:
        async def op(conn: Any, retrying: bool) -> bool:
            seq = await conn.fetchval(
                sql.CREATE_EXECUTION,
                execution_id,
                workflow,
                lease_seconds,
                input,
                owner,
                time.time(),
            )
            if seq is not None:
                return True
            if not retrying:
                return False
            # Our own first attempt may have created it before its reply was
            # lost: an execution with our owner, workflow and input is ours.
            row = await conn.fetchrow(
                "SELECT workflow, input, owner FROM executions WHERE id = $1",
                execution_id,
            )
            return row is not None and tuple(row) == (workflow, input, owner)

        return await self._call("create_execution", execution_id, op)

    async def claim(
        self,
        execution_id: str,
        owner: str,
        lease_seconds: float,
        *,
        steal_from: str | None = None,
    ) -> Claim:
        async def op(conn: Any, retrying: bool) -> Claim:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT {sql.EXECUTION_COLUMNS}, lease_expires_at < now() "
                    "AS expired FROM executions WHERE id = $1 FOR UPDATE",
                    execution_id,
                )
                if row is None:
                    raise self._not_found(execution_id)
                execution = sql.execution(row)
                if execution.status.terminal:
                    return Claim(execution, claimed=False)
                holder = row["owner"]
                free = holder is None or holder in (owner, steal_from)
                if not (free or row["expired"]):
                    return Claim(execution, claimed=False, holder=holder)
                taken = await conn.fetchrow(
                    sql.TAKE_LEASE,
                    execution_id,
                    owner,
                    lease_seconds,
                    resumed_payload(holder),
                    time.time(),
                )
                rows = await conn.fetch(sql.LOAD_STEPS, execution_id)
            checkpoints, failures = sql.steps(rows)
            return Claim(
                sql.execution(taken),
                claimed=True,
                checkpoints=checkpoints,
                failures=failures,
            )

        return await self._call("claim", execution_id, op)

    async def claim_expired(
        self, owner: str, lease_seconds: float, limit: int
    ) -> list[str]:
        async def op(conn: Any, retrying: bool) -> list[str]:
            rows = await conn.fetch(sql.CLAIM_EXPIRED, owner, limit, lease_seconds)
            return sorted(row["id"] for row in rows)

        # TODO(postgres-faults): if the reply of a committed claim_expired is
        # lost, the executions it took stay ours until their lease expires,
        # and recover() picks them up then; nothing is lost, only delayed.
        return await self._call("claim_expired", None, op)

    async def renew(
        self, owner: str, execution_ids: Sequence[str], lease_seconds: float
    ) -> set[str]:
        async def op(conn: Any, retrying: bool) -> set[str]:
            rows = await conn.fetch(
                sql.RENEW, owner, list(execution_ids), lease_seconds
            )
            return {row["id"] for row in rows}

        return await self._call("renew", None, op)

    async def release(self, execution_id: str, owner: str) -> None:
        async def op(conn: Any, retrying: bool) -> None:
            await conn.execute(
                "UPDATE executions SET owner = NULL, lease_expires_at = NULL "
                "WHERE id = $1 AND owner = $2",
                execution_id,
                owner,
            )

        await self._call("release", execution_id, op)

    async def get_execution(self, execution_id: str) -> Execution:
        async def op(conn: Any, retrying: bool) -> Any:
            return await conn.fetchrow(
                f"SELECT {sql.EXECUTION_COLUMNS} FROM executions WHERE id = $1",
                execution_id,
            )

        row = await self._call("get_execution", execution_id, op)
        if row is None:
            raise self._not_found(execution_id)
        return sql.execution(row)

    async def list_executions(
        self,
        *,
        status: ExecutionStatus | None,
        workflow: str | None,
        limit: int,
        after: str | None = None,
    ) -> list[Execution]:
        clauses, params = ["id > $1"], [after or ""]
        if status is not None:
            params.append(status.value)
            clauses.append(f"status = ${len(params)}")
        if workflow is not None:
            params.append(workflow)
            clauses.append(f"workflow = ${len(params)}")
        query = (
            f"SELECT {sql.EXECUTION_COLUMNS} FROM executions WHERE "
            f"{' AND '.join(clauses)} ORDER BY id LIMIT ${len(params) + 1}"
        )

        async def op(conn: Any, retrying: bool) -> list[Any]:
            return list(await conn.fetch(query, *params, limit))

        return [
            sql.execution(row) for row in await self._call("list_executions", None, op)
        ]

    # Steps and outcomes -------------------------------------------------

    async def record_step(
        self, execution_id: str, owner: str, checkpoint: Checkpoint
    ) -> None:
        # One statement in autocommit: one round trip, one transaction. The
        # owner check rides inside it, so a runner that lost its lease writes
        # nothing; the primary key pk_steps refuses a second checkpoint at a
        # position, whatever the code above does.
        #
        # This is the library's hottest call, so its first attempt is made
        # here, inline, on an idle connection; anything unusual (no idle
        # connection, an armed write fault, an error) goes through ``_call``.
        pool = self._pool
        conn = None if pool is None or active_write_fault() else pool.take()
        if conn is None:
            await self._record_step(execution_id, owner, checkpoint)
            return
        failed: BaseException | None = None
        status = None
        try:
            status = await sql.send_checkpoint(conn, execution_id, owner, checkpoint)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "pk_steps":
                raise checkpoint_conflict(execution_id, checkpoint.position) from exc
            failed = exc
        except _DATABASE_ERRORS as exc:
            failed = exc
        finally:
            pool.put(conn)
        if failed is not None:
            await self._record_step(execution_id, owner, checkpoint, failed=failed)
        elif status == sql.NOTHING_INSERTED:
            raise await self._lease_lost(execution_id, owner)

    async def _record_step(
        self,
        execution_id: str,
        owner: str,
        checkpoint: Checkpoint,
        *,
        failed: BaseException | None = None,
    ) -> None:
        """``record_step`` through the retry loop, with any armed write fault."""
        fault = active_write_fault()
        cut = (
            None
            if fault is None
            else fault(execution_id, checkpoint.position, checkpoint.step)
        )

        async def op(conn: Any, retrying: bool) -> None:
            # An injected cut fires on the first attempt only, as a real
            # fault would not follow the writer to its new connection.
            if cut is WriteCut.BEFORE_COMMIT and not retrying:
                await _cut_connection(conn)
            try:
                status = await sql.send_checkpoint(
                    conn, execution_id, owner, checkpoint
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != "pk_steps":
                    raise
                if retrying and await self._holds_checkpoint_on(
                    conn, execution_id, checkpoint
                ):
                    logger.warning(
                        "execution %s: checkpoint %d (%s) was committed by an "
                        "attempt whose reply was lost; keeping it",
                        execution_id,
                        checkpoint.position,
                        checkpoint.step,
                    )
                    return
                raise checkpoint_conflict(execution_id, checkpoint.position) from exc
            if status == sql.NOTHING_INSERTED:
                raise await self._lease_lost_on(conn, execution_id, owner)
            if cut is WriteCut.AFTER_COMMIT and not retrying:
                await _cut_connection(conn)

        await self._call("record_step", execution_id, op, failed=failed)

    async def _holds_checkpoint_on(
        self, conn: Any, execution_id: str, checkpoint: Checkpoint
    ) -> bool:
        """Whether the recorded checkpoint is the one we tried to write."""
        row = await conn.fetchrow(
            "SELECT step, args_hash, result FROM steps "
            "WHERE execution_id = $1 AND position = $2",
            execution_id,
            checkpoint.position,
        )
        return row is not None and tuple(row) == (
            checkpoint.step,
            checkpoint.args_hash,
            checkpoint.result,
        )

    async def record_failure(
        self, execution_id: str, owner: str, failure: StepFailure
    ) -> None:
        kind = "step_failed" if failure.final else "step_retried"
        payload = json.dumps(
            {"error": _json.loads(failure.error), "retry_in": failure.retry_in}
        )

        async def op(conn: Any, retrying: bool) -> None:
            owned = await conn.fetchval(
                sql.RECORD_FAILURE,
                execution_id,
                owner,
                kind,
                failure.position,
                failure.step,
                failure.attempt,
                failure.args_hash,
                payload,
                time.time(),
            )
            if not owned:
                raise await self._lease_lost_on(conn, execution_id, owner)

        await self._call("record_failure", execution_id, op)

    async def finish(
        self,
        execution_id: str,
        owner: str,
        status: ExecutionStatus,
        *,
        output: str | None = None,
        error: str | None = None,
    ) -> None:
        kind = (
            "execution_completed"
            if status is ExecutionStatus.COMPLETED
            else "execution_failed"
        )
        payload = output if output is not None else error
        now = time.time()

        async def op(conn: Any, retrying: bool) -> None:
            seq = await conn.fetchval(
                sql.FINISH,
                execution_id,
                owner,
                status.value,
                output,
                error,
                kind,
                payload,
                now,
            )
            if seq is not None:
                return
            if retrying:
                row = await conn.fetchrow(
                    "SELECT status, output, error FROM executions WHERE id = $1",
                    execution_id,
                )
                if row is not None and tuple(row) == (status.value, output, error):
                    return
            raise await self._lease_lost_on(conn, execution_id, owner)

        await self._call("finish", execution_id, op)

    async def journal(self, execution_id: str) -> Journal:
        async def op(conn: Any, retrying: bool) -> tuple[Any, list[Any], list[Any]]:
            # One snapshot for the three tables, so no step is seen half-way.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                execution = await conn.fetchrow(
                    f"SELECT {sql.EXECUTION_COLUMNS} FROM executions WHERE id = $1",
                    execution_id,
                )
                events = await conn.fetch(
                    "SELECT seq, kind, position, step, attempt, payload, at "
                    "FROM events WHERE execution_id = $1 ORDER BY seq",
                    execution_id,
                )
                steps = await conn.fetch(
                    "SELECT position, step, args_hash, attempt, result, "
                    "extract(epoch FROM started_at)::float8, "
                    "extract(epoch FROM completed_at)::float8 "
                    "FROM steps WHERE execution_id = $1 ORDER BY position",
                    execution_id,
                )
            return execution, list(events), list(steps)

        row, events, steps = await self._call("journal", execution_id, op)
        if row is None:
            raise self._not_found(execution_id)
        return Journal(
            sql.execution(row),
            events_from_rows(execution_id, events, sql.epoch),
            [Checkpoint(*step) for step in steps],
        )

    # The effect ledger --------------------------------------------------

    async def record_effect(
        self, key: str, *, execution_id: str | None = None, detail: str = ""
    ) -> int:
        async def op(conn: Any, retrying: bool) -> int:
            async with conn.transaction():
                # Serialises writers of one key, so each sees the others'
                # rows and the counts they return are exact.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)
                await conn.execute(
                    "INSERT INTO effects (key, execution_id, detail, at) "
                    "VALUES ($1, $2, $3, now())",
                    key,
                    execution_id,
                    detail,
                )
                count = await conn.fetchval(
                    "SELECT count(*) FROM effects WHERE key = $1", key
                )
            return int(count)

        # TODO(postgres-faults): an effect has no idempotency token in the
        # schema, so one whose commit outcome is unknown is reported as a
        # StoreError rather than written a second time.
        return await self._call("record_effect", execution_id, op, replayable=False)

    async def effect_counts(self, *, prefix: str = "") -> dict[str, int]:
        async def op(conn: Any, retrying: bool) -> list[Any]:
            return list(
                await conn.fetch(
                    "SELECT key, count(*) FROM effects "
                    "WHERE left(key, length($1)) = $1 GROUP BY key",
                    prefix,
                )
            )

        rows = await self._call("effect_counts", None, op)
        return {row[0]: int(row[1]) for row in rows}


async def _cut_connection(conn: Any) -> None:
    """Make the server end this connection now (fault injection only).

    The backend terminates itself, so the client sees exactly the error a
    crashed server or a cut network would give it.
    """
    await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
