"""The store contract: what every journal backend must do, and nothing more.

The runtime owns the logic of recording and replaying; a store only persists
and answers. Every method that writes is one transaction, and the ones on the
hot path (``record_step``) are one statement where the database allows it.

Ownership: an execution is owned by one runner at a time through a lease,
``owner`` plus an expiry. Writes that belong to a run (steps, failures, the
terminal event) carry the owner and are refused with ``LeaseLost`` when the
store no longer names that owner, so a runner that lost its lease cannot write
over the runner that took over.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from waypoint.errors import CheckpointConflict, ExecutionNotFound, LeaseLost
from waypoint.journal import (
    Checkpoint,
    Claim,
    Event,
    Execution,
    ExecutionStatus,
    Journal,
    StepFailure,
)

__all__ = ["Store", "checkpoint_conflict", "lease_lost", "not_found"]


# The errors every store raises, worded once.


def not_found(execution_id: str, where: str) -> ExecutionNotFound:
    return ExecutionNotFound(
        f"no execution {execution_id!r} in {where}", execution_id=execution_id
    )


def lease_lost(
    execution_id: str, owner: str, holder: str | None, status: str
) -> LeaseLost:
    return LeaseLost(
        f"execution {execution_id} is no longer owned by {owner} (owner now: "
        f"{holder}, status: {status}); another runner took it over, and this "
        "runner's write was refused",
        execution_id=execution_id,
        owner=holder,
    )


def checkpoint_conflict(execution_id: str, position: int) -> CheckpointConflict:
    return CheckpointConflict(
        f"execution {execution_id} already has a checkpoint at position "
        f"{position}; a checkpoint is written once",
        execution_id=execution_id,
        position=position,
    )


class Store(abc.ABC):
    """A journal backend. Open it before use; the runtime does so for you."""

    #: The URL this store was opened from, with any password removed.
    dsn: str = ""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """Whether ``open`` has run and ``close`` has not."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and check (or, where allowed, apply) the schema version."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; safe to call twice."""

    # Executions ---------------------------------------------------------

    @abc.abstractmethod
    async def create_execution(
        self,
        execution_id: str,
        workflow: str,
        input: str,
        owner: str,
        lease_seconds: float,
    ) -> bool:
        """Insert a running execution owned by ``owner`` and its started event.

        Returns False, changing nothing, when the id already exists.
        """

    @abc.abstractmethod
    async def claim(
        self,
        execution_id: str,
        owner: str,
        lease_seconds: float,
        *,
        steal_from: str | None = None,
    ) -> Claim:
        """Take the lease of a running execution and load its checkpoints.

        The lease is taken when it is free (no owner, or expired), already
        ours, or held by ``steal_from`` (a runner the caller knows is dead).
        A resumed event is written when the lease is taken. Checkpoints and
        failures come back in position order, from one query each at most.
        Raises ``ExecutionNotFound``.
        """

    @abc.abstractmethod
    async def claim_expired(
        self, owner: str, lease_seconds: float, limit: int
    ) -> list[str]:
        """Atomically take up to ``limit`` running executions whose lease has
        expired, and return their ids. Two callers never get the same id."""

    @abc.abstractmethod
    async def renew(
        self, owner: str, execution_ids: Sequence[str], lease_seconds: float
    ) -> set[str]:
        """Extend the leases ``owner`` still holds; return the ids it holds."""

    @abc.abstractmethod
    async def release(self, execution_id: str, owner: str) -> None:
        """Give up the lease, if ``owner`` holds it, leaving the run resumable."""

    @abc.abstractmethod
    async def get_execution(self, execution_id: str) -> Execution:
        """The execution, or ``ExecutionNotFound``."""

    @abc.abstractmethod
    async def list_executions(
        self,
        *,
        status: ExecutionStatus | None,
        workflow: str | None,
        limit: int,
        after: str | None = None,
    ) -> list[Execution]:
        """Executions in id order (creation order), after the id ``after``."""

    # Steps and outcomes -------------------------------------------------

    @abc.abstractmethod
    async def record_step(
        self, execution_id: str, owner: str, checkpoint: Checkpoint
    ) -> None:
        """Write a checkpoint (and its started event) in one transaction.

        Raises ``CheckpointConflict`` when the position already holds one and
        ``LeaseLost`` when ``owner`` no longer holds the lease.
        """

    @abc.abstractmethod
    async def record_failure(
        self, execution_id: str, owner: str, failure: StepFailure
    ) -> None:
        """Write a failed attempt (retried or final)."""

    @abc.abstractmethod
    async def finish(
        self,
        execution_id: str,
        owner: str,
        status: ExecutionStatus,
        *,
        output: str | None = None,
        error: str | None = None,
    ) -> None:
        """Mark the execution terminal, write its terminal event, drop the
        lease. Raises ``LeaseLost`` when ``owner`` no longer holds it."""

    @abc.abstractmethod
    async def journal(self, execution_id: str) -> Journal:
        """The execution, its events and its checkpoints, read in one
        snapshot. Raises ``ExecutionNotFound``."""

    async def history(self, execution_id: str) -> list[Event]:
        """The journal of one execution, in the order it was written."""
        return (await self.journal(execution_id)).history()

    # The effect ledger --------------------------------------------------

    @abc.abstractmethod
    async def record_effect(
        self, key: str, *, execution_id: str | None = None, detail: str = ""
    ) -> int:
        """Append one application of the side effect ``key``; return how many
        times ``key`` has now been applied."""

    @abc.abstractmethod
    async def effect_counts(self, *, prefix: str = "") -> dict[str, int]:
        """How many times each effect key starting with ``prefix`` was applied."""
