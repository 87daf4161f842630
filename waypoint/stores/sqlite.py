"""``SQLiteStore``: the embedded default, a journal in one local file.

The connection is used on the event loop thread. In WAL mode a commit takes
microseconds, far less than handing each statement to a worker thread would
cost, and the runtime's hot path is one statement per step.

Durability: ``durability="process"`` (the default, ``synchronous=NORMAL``)
loses nothing when the process crashes; the last transactions before a power
loss or OS crash may be lost. ``durability="power"`` (``synchronous=FULL``)
survives power loss too, at the price of an fsync per step.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from waypoint import _json
from waypoint.errors import (
    ConfigurationError,
    ExecutionNotFound,
    SchemaVersionError,
    StoreError,
    WaypointError,
)
from waypoint.journal import (
    Checkpoint,
    Claim,
    Execution,
    ExecutionStatus,
    Journal,
    StepFailure,
    events_from_rows,
    failure_from_row,
    resumed_payload,
    utc_from_timestamp,
)
from waypoint.stores.base import (
    Store,
    checkpoint_conflict,
    lease_lost,
    not_found,
)
from waypoint.stores.schema import SCHEMA_REVISION, alembic_config, check_revision

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

Durability = Literal["process", "power"]
_SYNCHRONOUS = {"process": "NORMAL", "power": "FULL"}

#: How long a writer waits for another process's write lock before failing.
BUSY_TIMEOUT_MS = 10_000

_EXECUTION_COLUMNS = (
    "id, workflow, status, input, output, error, created_at, updated_at, "
    "completed_at, owner, lease_expires_at"
)

# The columns after execution_id are a Checkpoint's fields, in its order.
_RECORD_STEP = """
INSERT INTO steps
    (execution_id, position, step, args_hash, attempt, result, started_at,
     completed_at)
SELECT ?, ?, ?, ?, ?, ?, ?, ?
WHERE EXISTS (SELECT 1 FROM executions WHERE id = ? AND owner = ?)
"""

_RECORD_FAILURE = """
INSERT INTO events
    (execution_id, kind, position, step, attempt, args_hash, payload, at)
SELECT ?, ?, ?, ?, ?, ?, ?, ?
WHERE EXISTS (SELECT 1 FROM executions WHERE id = ? AND owner = ?)
"""

# Checkpoints in one query, read in primary-key (position) order.
_LOAD_CHECKPOINTS = """
SELECT position, step, args_hash, attempt, result, started_at, completed_at
FROM steps WHERE execution_id = ?
"""

_LOAD_FAILURES = """
SELECT position, step, args_hash, attempt, payload, kind
FROM events
WHERE execution_id = ? AND kind IN ('step_retried', 'step_failed')
ORDER BY seq
"""


def _execution(row: sqlite3.Row | tuple[Any, ...]) -> Execution:
    def when(value: float | None) -> Any:
        return None if value is None else utc_from_timestamp(value)

    return Execution.from_row(
        execution_id=row[0],
        workflow=row[1],
        status=row[2],
        input=row[3],
        output=row[4],
        error=row[5],
        created_at=utc_from_timestamp(row[6]),
        updated_at=utc_from_timestamp(row[7]),
        completed_at=when(row[8]),
        owner=row[9],
        lease_expires_at=when(row[10]),
    )


def _checkpoints(db: sqlite3.Connection, execution_id: str) -> list[Checkpoint]:
    # The rows are in the Checkpoint's field order, so each becomes one as it
    # is, without a call of the named tuple's Python-level constructor.
    # TODO(replay-speed): a resume reads all seven columns (1.9 us a row in
    # sqlite3 here) where a replay needs four; replay is 5.3 us a step, not 5.
    new = tuple.__new__
    return [
        new(Checkpoint, row) for row in db.execute(_LOAD_CHECKPOINTS, (execution_id,))
    ]


class SQLiteStore(Store):
    """A journal in a SQLite file; several processes may share the file."""

    def __init__(
        self,
        path: str | os.PathLike[str] = "waypoint.db",
        *,
        durability: Durability = "process",
        migrate: bool = True,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"unknown durability {durability!r}: use 'process' (survives a "
                "process crash) or 'power' (survives power loss, slower)"
            )
        self.path = Path(path)
        self.durability = durability
        self.migrate = migrate
        self.dsn = f"sqlite:///{self.path}"
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def from_dsn(cls, dsn: str) -> SQLiteStore:
        """``sqlite:///rel.db``, ``sqlite:////abs.db``, ``?durability=power``."""
        parsed = urllib.parse.urlsplit(dsn)
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if parsed.netloc or not path:
            raise ConfigurationError(
                f"bad SQLite URL {dsn!r}: write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        options = dict(urllib.parse.parse_qsl(parsed.query))
        durability = options.pop("durability", "process")
        if options:
            raise ConfigurationError(
                f"unknown option(s) {sorted(options)} in {dsn!r}; the only "
                "option is durability=process|power"
            )
        return cls(path, durability=durability)  # type: ignore[arg-type]

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise WaypointError(f"the store {self.dsn} is not open")
        return self._conn

    async def open(self) -> None:
        if self._conn is not None:
            return
        if self.path.parent != Path() and not self.path.parent.exists():
            raise ConfigurationError(
                f"cannot create the journal {self.path}: the directory "
                f"{self.path.parent} does not exist"
            )
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the journal {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self.durability]}")
            self._ensure_schema(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open the journal {self.path}: {exc}") from exc
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _revision(self, conn: sqlite3.Connection) -> str | None:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else str(row[0])

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        command = f"waypoint db upgrade --dsn {self.dsn}"
        found = self._revision(conn)
        if not check_revision(found, str(self.path), command):
            return
        if not self.migrate:
            raise SchemaVersionError(
                f"the journal at {self.path} is at schema revision {found}, "
                f"not {SCHEMA_REVISION}; run: {command}",
                found=found,
                expected=SCHEMA_REVISION,
            )
        # Two processes opening a new file at once must not both migrate it.
        with _file_lock(self.path.with_name(self.path.name + ".migrate-lock")):
            if check_revision(self._revision(conn), str(self.path), command):
                self._upgrade()

    def _upgrade(self) -> None:
        from alembic import command
        from sqlalchemy import create_engine, pool

        logger.info("applying schema migrations to %s", self.path)
        engine = create_engine(f"sqlite:///{self.path}", poolclass=pool.NullPool)
        try:
            with engine.begin() as connection:
                command.upgrade(alembic_config(connection=connection), "head")
        finally:
            engine.dispose()

    @contextmanager
    def _transaction(
        self, begin: str = "BEGIN IMMEDIATE"
    ) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so the reads inside see
        # what no other process can change before this transaction commits.
        # DEFERRED (``_snapshot``) only reads: WAL keeps one state of the file
        # for it, whatever another process commits meanwhile.
        db = self._db
        db.execute(begin)
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._transaction("BEGIN DEFERRED")

    # Executions ---------------------------------------------------------

    async def create_execution(
        self,
        execution_id: str,
        workflow: str,
        input: str,
        owner: str,
        lease_seconds: float,
    ) -> bool:
        now = time.time()
        with _translated(self), self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO executions (id, workflow, status, input, owner, "
                "lease_expires_at, created_at, updated_at) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (execution_id, workflow, input, owner, now + lease_seconds, now, now),
            )
            if cursor.rowcount == 0:
                return False
            db.execute(
                "INSERT INTO events (execution_id, kind, payload, at) "
                "VALUES (?, 'execution_started', ?, ?)",
                (execution_id, input, now),
            )
        return True

    async def claim(
        self,
        execution_id: str,
        owner: str,
        lease_seconds: float,
        *,
        steal_from: str | None = None,
    ) -> Claim:
        now = time.time()
        with _translated(self), self._transaction() as db:
            row = self._execution_row(db, execution_id)
            execution = _execution(row)
            if execution.status.terminal:
                return Claim(execution, claimed=False)
            holder, expires = row[9], row[10]
            free = holder is None or holder in (owner, steal_from) or expires < now
            if not free:
                return Claim(execution, claimed=False, holder=holder)
            db.execute(
                "UPDATE executions SET owner = ?, lease_expires_at = ?, "
                "updated_at = ? WHERE id = ?",
                (owner, now + lease_seconds, now, execution_id),
            )
            db.execute(
                "INSERT INTO events (execution_id, kind, payload, at) "
                "VALUES (?, 'execution_resumed', ?, ?)",
                (execution_id, resumed_payload(holder), now),
            )
            checkpoints = _checkpoints(db, execution_id)
            failures = [
                failure_from_row(*row)
                for row in db.execute(_LOAD_FAILURES, (execution_id,))
            ]
        return Claim(
            execution, claimed=True, checkpoints=checkpoints, failures=failures
        )

    async def claim_expired(
        self, owner: str, lease_seconds: float, limit: int
    ) -> list[str]:
        now = time.time()
        with _translated(self), self._transaction() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM executions WHERE status = 'running' AND "
                    "(owner IS NULL OR lease_expires_at < ?) ORDER BY id LIMIT ?",
                    (now, limit),
                )
            ]
            db.executemany(
                "UPDATE executions SET owner = ?, lease_expires_at = ? WHERE id = ?",
                [(owner, now + lease_seconds, i) for i in ids],
            )
        return ids

    async def renew(
        self, owner: str, execution_ids: Sequence[str], lease_seconds: float
    ) -> set[str]:
        now = time.time()
        held = set()
        with _translated(self), self._transaction() as db:
            for execution_id in execution_ids:
                cursor = db.execute(
                    "UPDATE executions SET lease_expires_at = ? WHERE id = ? AND "
                    "owner = ? AND status = 'running'",
                    (now + lease_seconds, execution_id, owner),
                )
                if cursor.rowcount:
                    held.add(execution_id)
        return held

    async def release(self, execution_id: str, owner: str) -> None:
        with _translated(self):
            self._db.execute(
                "UPDATE executions SET owner = NULL, lease_expires_at = NULL "
                "WHERE id = ? AND owner = ?",
                (execution_id, owner),
            )

    async def get_execution(self, execution_id: str) -> Execution:
        with _translated(self):
            return _execution(self._execution_row(self._db, execution_id))

    def _execution_row(self, db: sqlite3.Connection, execution_id: str) -> Any:
        row = db.execute(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE id = ?",
            (execution_id,),
        ).fetchone()
        if row is None:
            raise self._not_found(execution_id)
        return row

    async def list_executions(
        self,
        *,
        status: ExecutionStatus | None,
        workflow: str | None,
        limit: int,
        after: str | None = None,
    ) -> list[Execution]:
        clauses, params = ["id > ?"], [after or ""]
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        if workflow is not None:
            clauses.append("workflow = ?")
            params.append(workflow)
        query = (
            f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE "
            f"{' AND '.join(clauses)} ORDER BY id LIMIT ?"
        )
        with _translated(self):
            rows = self._db.execute(query, (*params, limit)).fetchall()
        return [_execution(row) for row in rows]

    # Steps and outcomes -------------------------------------------------

    async def record_step(
        self, execution_id: str, owner: str, checkpoint: Checkpoint
    ) -> None:
        # One statement in autocommit mode: one transaction, one commit. The
        # owner check rides inside it, so a runner that lost its lease writes
        # nothing.
        try:
            cursor = self._db.execute(
                _RECORD_STEP, (execution_id, *checkpoint, execution_id, owner)
            )
        except sqlite3.IntegrityError as exc:
            raise checkpoint_conflict(execution_id, checkpoint.position) from exc
        except sqlite3.Error as exc:
            raise _store_error(self, exc) from exc
        if cursor.rowcount == 0:
            raise await self._lease_lost(execution_id, owner)

    async def record_failure(
        self, execution_id: str, owner: str, failure: StepFailure
    ) -> None:
        kind = "step_failed" if failure.final else "step_retried"
        payload = json.dumps(
            {"error": _json.loads(failure.error), "retry_in": failure.retry_in}
        )
        with _translated(self):
            cursor = self._db.execute(
                _RECORD_FAILURE,
                (
                    execution_id,
                    kind,
                    failure.position,
                    failure.step,
                    failure.attempt,
                    failure.args_hash,
                    payload,
                    time.time(),
                    execution_id,
                    owner,
                ),
            )
        if cursor.rowcount == 0:
            raise await self._lease_lost(execution_id, owner)

    async def finish(
        self,
        execution_id: str,
        owner: str,
        status: ExecutionStatus,
        *,
        output: str | None = None,
        error: str | None = None,
    ) -> None:
        now = time.time()
        kind = (
            "execution_completed"
            if status is ExecutionStatus.COMPLETED
            else "execution_failed"
        )
        with _translated(self), self._transaction() as db:
            cursor = db.execute(
                "UPDATE executions SET status = ?, output = ?, error = ?, "
                "completed_at = ?, updated_at = ?, owner = NULL, "
                "lease_expires_at = NULL "
                "WHERE id = ? AND owner = ? AND status = 'running'",
                (status.value, output, error, now, now, execution_id, owner),
            )
            if cursor.rowcount == 0:
                raise await self._lease_lost(execution_id, owner)
            db.execute(
                "INSERT INTO events (execution_id, kind, payload, at) "
                "VALUES (?, ?, ?, ?)",
                (execution_id, kind, output if output is not None else error, now),
            )

    async def journal(self, execution_id: str) -> Journal:
        with _translated(self), self._snapshot() as db:
            row = self._execution_row(db, execution_id)
            events = db.execute(
                "SELECT seq, kind, position, step, attempt, payload, at "
                "FROM events WHERE execution_id = ? ORDER BY seq",
                (execution_id,),
            ).fetchall()
            checkpoints = _checkpoints(db, execution_id)
        return Journal(
            _execution(row),
            events_from_rows(execution_id, events, float),
            checkpoints,
        )

    # The effect ledger --------------------------------------------------

    async def record_effect(
        self, key: str, *, execution_id: str | None = None, detail: str = ""
    ) -> int:
        with _translated(self), self._transaction() as db:
            db.execute(
                "INSERT INTO effects (key, execution_id, detail, at) "
                "VALUES (?, ?, ?, ?)",
                (key, execution_id, detail, time.time()),
            )
            (count,) = db.execute(
                "SELECT count(*) FROM effects WHERE key = ?", (key,)
            ).fetchone()
        return int(count)

    async def effect_counts(self, *, prefix: str = "") -> dict[str, int]:
        with _translated(self):
            rows = self._db.execute(
                "SELECT key, count(*) FROM effects WHERE substr(key, 1, ?) = ? "
                "GROUP BY key",
                (len(prefix), prefix),
            ).fetchall()
        return {key: int(count) for key, count in rows}

    # Errors -------------------------------------------------------------

    def _not_found(self, execution_id: str) -> ExecutionNotFound:
        return not_found(execution_id, self.dsn)

    async def _lease_lost(self, execution_id: str, owner: str) -> WaypointError:
        execution = await self.get_execution(execution_id)
        return lease_lost(execution_id, owner, execution.owner, execution.status.value)


def _store_error(store: SQLiteStore, exc: sqlite3.Error) -> StoreError:
    return StoreError(
        f"the SQLite journal {store.path} failed: {exc}. If another process "
        f"holds a long write lock, retry; if the file is damaged, restore it"
    )


@contextmanager
def _translated(store: SQLiteStore) -> Iterator[None]:
    """Driver errors become ``StoreError`` here, and only here."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _store_error(store, exc) from exc


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
