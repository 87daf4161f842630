"""``MemoryStore``: the journal in a dict, for tests and fast fuzzing.

It keeps the same rules as the SQL stores (one checkpoint per position, owner
checks, leases) so the contract suite holds it to them; data lives as long as
the object, so a "fresh runtime on the same store" is a new ``Waypoint`` given
the same ``MemoryStore``.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from waypoint import _json
from waypoint.journal import (
    Checkpoint,
    Claim,
    Event,
    EventKind,
    Execution,
    ExecutionStatus,
    Journal,
    StepFailure,
    resumed_payload,
    utc_from_timestamp,
)
from waypoint.stores.base import (
    Store,
    checkpoint_conflict,
    lease_lost,
    not_found,
)

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Row:
    execution_id: str
    workflow: str
    status: ExecutionStatus
    input: str
    created_at: float
    updated_at: float
    owner: str | None
    lease_expires_at: float | None
    output: str | None = None
    error: str | None = None
    completed_at: float | None = None
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    failures: list[StepFailure] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def execution(self) -> Execution:
        return Execution(
            execution_id=self.execution_id,
            workflow=self.workflow,
            status=self.status,
            input=_json.loads(self.input),
            output=None if self.output is None else _json.loads(self.output),
            error=None if self.error is None else _json.loads(self.error),
            created_at=utc_from_timestamp(self.created_at),
            updated_at=utc_from_timestamp(self.updated_at),
            completed_at=(
                None
                if self.completed_at is None
                else utc_from_timestamp(self.completed_at)
            ),
            owner=self.owner,
            lease_expires_at=(
                None
                if self.lease_expires_at is None
                else utc_from_timestamp(self.lease_expires_at)
            ),
        )


class MemoryStore(Store):
    """An in-process journal. Not shared between processes."""

    dsn = "memory://"

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        # Applications per effect key, and the keys in sorted order: the
        # chaos harness counts one execution's effects (a key prefix) after
        # every scenario, which must not cost a scan of every effect since
        # the store was made. Nothing reads an application's detail back, so
        # this store does not keep it.
        self._effect_counts: dict[str, int] = {}
        self._effect_keys: list[str] = []
        self._seq = 0
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _row(self, execution_id: str) -> _Row:
        row = self._rows.get(execution_id)
        if row is None:
            raise not_found(execution_id, self.dsn)
        return row

    def _append(self, row: _Row, kind: EventKind, at: float, **fields: object) -> None:
        self._seq += 1
        row.events.append(
            Event(self._seq, row.execution_id, kind, at, **fields)  # type: ignore[arg-type]
        )

    def _owned(self, execution_id: str, owner: str) -> _Row:
        row = self._row(execution_id)
        if row.owner != owner:
            raise lease_lost(execution_id, owner, row.owner, row.status.value)
        return row

    async def create_execution(
        self,
        execution_id: str,
        workflow: str,
        input: str,
        owner: str,
        lease_seconds: float,
    ) -> bool:
        if execution_id in self._rows:
            return False
        now = time.time()
        row = _Row(
            execution_id,
            workflow,
            ExecutionStatus.RUNNING,
            input,
            now,
            now,
            owner,
            now + lease_seconds,
        )
        self._rows[execution_id] = row
        self._append(row, EventKind.EXECUTION_STARTED, now, payload_json=input)
        return True

    async def claim(
        self,
        execution_id: str,
        owner: str,
        lease_seconds: float,
        *,
        steal_from: str | None = None,
    ) -> Claim:
        row = self._row(execution_id)
        now = time.time()
        if row.status.terminal:
            return Claim(row.execution(), claimed=False)
        free = (
            row.owner is None
            or row.owner in (owner, steal_from)
            or (row.lease_expires_at or 0) < now
        )
        if not free:
            return Claim(row.execution(), claimed=False, holder=row.owner)
        previous = row.owner
        row.owner, row.lease_expires_at, row.updated_at = (
            owner,
            now + lease_seconds,
            now,
        )
        self._append(
            row,
            EventKind.EXECUTION_RESUMED,
            now,
            payload_json=resumed_payload(previous),
        )
        return Claim(
            row.execution(),
            claimed=True,
            checkpoints=_in_position_order(row.checkpoints),
            failures=list(row.failures),
        )

    async def claim_expired(
        self, owner: str, lease_seconds: float, limit: int
    ) -> list[str]:
        now = time.time()
        taken: list[str] = []
        for row in self._rows.values():
            if len(taken) >= limit:
                break
            if row.status is not ExecutionStatus.RUNNING:
                continue
            if row.owner is None or (row.lease_expires_at or 0) < now:
                row.owner, row.lease_expires_at = owner, now + lease_seconds
                taken.append(row.execution_id)
        return taken

    async def renew(
        self, owner: str, execution_ids: Sequence[str], lease_seconds: float
    ) -> set[str]:
        now = time.time()
        held = set()
        for execution_id in execution_ids:
            row = self._rows.get(execution_id)
            if row is not None and row.owner == owner and not row.status.terminal:
                row.lease_expires_at = now + lease_seconds
                held.add(execution_id)
        return held

    async def release(self, execution_id: str, owner: str) -> None:
        row = self._rows.get(execution_id)
        if row is not None and row.owner == owner:
            row.owner, row.lease_expires_at = None, None

    async def get_execution(self, execution_id: str) -> Execution:
        return self._row(execution_id).execution()

    async def list_executions(
        self,
        *,
        status: ExecutionStatus | None,
        workflow: str | None,
        limit: int,
        after: str | None = None,
    ) -> list[Execution]:
        rows = sorted(self._rows.values(), key=lambda r: r.execution_id)
        found = []
        for row in rows:
            if after is not None and row.execution_id <= after:
                continue
            if status is not None and row.status is not status:
                continue
            if workflow is not None and row.workflow != workflow:
                continue
            found.append(row.execution())
            if len(found) >= limit:
                break
        return found

    async def record_step(
        self, execution_id: str, owner: str, checkpoint: Checkpoint
    ) -> None:
        row = self._owned(execution_id, owner)
        if checkpoint.position in row.checkpoints:
            raise checkpoint_conflict(execution_id, checkpoint.position)
        row.checkpoints[checkpoint.position] = checkpoint
        row.updated_at = checkpoint.completed_at

    async def record_failure(
        self, execution_id: str, owner: str, failure: StepFailure
    ) -> None:
        row = self._owned(execution_id, owner)
        row.failures.append(failure)
        payload = {"error": _json.loads(failure.error), "retry_in": failure.retry_in}
        kind = EventKind.STEP_FAILED if failure.final else EventKind.STEP_RETRIED
        self._append(
            row,
            kind,
            time.time(),
            position=failure.position,
            step=failure.step,
            attempt=failure.attempt,
            payload_json=json.dumps(payload),
        )

    async def finish(
        self,
        execution_id: str,
        owner: str,
        status: ExecutionStatus,
        *,
        output: str | None = None,
        error: str | None = None,
    ) -> None:
        row = self._owned(execution_id, owner)
        now = time.time()
        row.status, row.output, row.error = status, output, error
        row.completed_at = row.updated_at = now
        row.owner = row.lease_expires_at = None
        if status is ExecutionStatus.COMPLETED:
            kind, payload = EventKind.EXECUTION_COMPLETED, output
        else:
            kind, payload = EventKind.EXECUTION_FAILED, error
        self._append(row, kind, now, payload_json=payload)

    async def journal(self, execution_id: str) -> Journal:
        row = self._row(execution_id)
        return Journal(
            row.execution(), list(row.events), _in_position_order(row.checkpoints)
        )

    async def record_effect(
        self, key: str, *, execution_id: str | None = None, detail: str = ""
    ) -> int:
        count = self._effect_counts.get(key, 0) + 1
        if count == 1:
            bisect.insort(self._effect_keys, key)
        self._effect_counts[key] = count
        return count

    async def effect_counts(self, *, prefix: str = "") -> dict[str, int]:
        # The keys that start with ``prefix`` are one run of the sorted keys.
        keys = self._effect_keys
        counts: dict[str, int] = {}
        for index in range(bisect.bisect_left(keys, prefix), len(keys)):
            key = keys[index]
            if not key.startswith(prefix):
                break
            counts[key] = self._effect_counts[key]
        return counts


def _in_position_order(checkpoints: dict[int, Checkpoint]) -> list[Checkpoint]:
    # Sorting the int keys needs no key function, unlike sorting the values.
    return [checkpoints[position] for position in sorted(checkpoints)]
