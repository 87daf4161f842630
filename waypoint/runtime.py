"""The runtime: drives workflows, records steps, replays them after a crash.

The order of operations is the durability argument. A step's result is
committed to the journal *before* the step returns it to the workflow, so a
crash at any instant leaves each step either recorded (it will never run
again) or not (it will run again, with the same idempotency key). Nothing a
step returns can be acted upon by the workflow before it is durable.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from waypoint import _json
from waypoint.decorators import (
    WorkflowDef,
    _current_run,
    workflow_definition,
)
from waypoint.errors import (
    CheckpointConflict,
    ConfigurationError,
    ExecutionBusy,
    NonDeterminismError,
    SerializationError,
    StoreError,
    WaypointError,
)
from waypoint.hooks import CrashPhase, CrashSite, active_hook
from waypoint.ids import new_execution_id
from waypoint.journal import (
    Claim,
    Event,
    Execution,
    ExecutionStatus,
)
from waypoint.renewal import LeaseKeeper, keeper_for
from waypoint.replay import Run
from waypoint.serialization import (
    decode_arguments,
    encode_arguments,
    encode_error,
    rebuild_error,
    type_name,
)
from waypoint.stores import open_store
from waypoint.stores.base import Store

__all__ = ["Waypoint"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a lease lasts without renewal. Long enough that a busy event loop
#: never loses it by accident; a runner on another host takes over a dead
#: runner's executions after at most this long.
DEFAULT_LEASE_SECONDS = 30.0

#: Executions ``recover()`` takes in one call unless told otherwise.
DEFAULT_RECOVER_LIMIT = 100

#: Errors that say nothing about the workflow's own outcome leave the
#: execution running (not failed), to be resumed later: a code fix mends the
#: first two, the database coming back the fourth, and another runner owns or
#: has already written what the others are about.
_UNRECORDED = (
    NonDeterminismError,
    SerializationError,
    ExecutionBusy,
    StoreError,
    CheckpointConflict,
)


class RuntimeState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


def _owner_id() -> str:
    """``host:pid:token``, unique to one runtime.

    The token is a random prefix drawn once per process and a counter: a
    process that reuses a dead one's pid draws another prefix, so it never
    takes the dead runner's id, and a runtime costs no system call (the
    chaos harness makes one for every crash and every resume).
    """
    global _token_pid, _token_prefix, _token_count
    pid = os.getpid()
    if pid != _token_pid:
        _token_pid, _token_prefix = pid, secrets.token_hex(4)
        _token_count = itertools.count(1)
    return f"{_hostname()}:{pid}:{_token_prefix}.{next(_token_count)}"


_token_pid = 0
_token_prefix = ""
_token_count = itertools.count(1)


@functools.cache
def _hostname() -> str:
    return socket.gethostname()


def _owner_is_dead_here(owner: str) -> bool:
    """True when ``owner`` is a runner on this host whose process is gone.

    Lets a restarted process resume its own crashed executions at once rather
    than wait out their leases. A process that was killed but not yet reaped
    still counts as alive until its parent waits for it.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _hostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Waypoint:
    """The runtime. Use it as an async context manager.

    ``store_or_dsn`` is a ``Store`` or a URL (``sqlite:///path.db``,
    ``postgresql://...``, ``memory://``); with neither, ``WAYPOINT_DSN`` or a
    SQLite file ``waypoint.db`` in the working directory.
    """

    def __init__(
        self,
        store_or_dsn: Store | str | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        if not isinstance(lease_seconds, int | float) or lease_seconds <= 0:
            raise ConfigurationError(
                f"lease_seconds must be a positive number, not {lease_seconds!r}"
            )
        if isinstance(store_or_dsn, Store):
            self.store = store_or_dsn
            self._owns_store = False
        else:
            self.store = open_store(store_or_dsn)
            self._owns_store = True
        self.lease_seconds = float(lease_seconds)
        self.owner = _owner_id()
        self._state = RuntimeState.NEW
        self._running: dict[str, Run] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        # Lease renewal: the loop's keeper calls renewal_due on time; a task
        # runs while a renewal is under way.
        self._keeper: LeaseKeeper | None = None
        self._renewal: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Waypoint {self._state.value} store={self.store.dsn!r}>"

    # Lifecycle -----------------------------------------------------------

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

    async def open(self) -> None:
        if self._state is RuntimeState.CLOSED:
            raise WaypointError("this Waypoint runtime is closed; create a new one")
        if self._state is RuntimeState.OPEN:
            return
        if not self.store.is_open:
            await self.store.open()
        self._state = RuntimeState.OPEN
        loop = asyncio.get_running_loop()
        self._keeper = keeper_for(loop)
        self._keeper.join(self, loop)

    async def close(self) -> None:
        """Stop background runs (they stay resumable) and release the store."""
        if self._state is not RuntimeState.OPEN:
            self._state = RuntimeState.CLOSED
            return
        self._state = RuntimeState.CLOSED
        if self._keeper is not None:
            self._keeper.leave(self)
        tasks = [*self._tasks.values()]
        if self._renewal is not None:
            tasks.append(self._renewal)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_store:
            await self.store.close()

    async def _ready(self) -> None:
        if self._state is not RuntimeState.OPEN:
            await self.open()

    @property
    def renewal_period(self) -> float:
        # A third of the lease: two missed renewals in a row still leave the
        # lease alive.
        return self.lease_seconds / 3

    def renewal_due(self) -> None:
        """Called by the loop's lease keeper when this runtime should renew."""
        if self._state is not RuntimeState.OPEN or not self._running:
            return
        if self._renewal is not None and not self._renewal.done():
            return  # the last renewal is still waiting for the store
        # Done already when an eager task factory ran it to its end inside
        # create_task; then there is nothing in flight to remember.
        task = asyncio.get_running_loop().create_task(self._renew_leases())
        self._renewal = None if task.done() else task

    async def _renew_leases(self) -> None:
        ids = list(self._running)
        try:
            held = await self.store.renew(self.owner, ids, self.lease_seconds)
        except WaypointError as exc:
            logger.warning("lease renewal for %d executions failed: %s", len(ids), exc)
            held = set(ids)
        finally:
            self._renewal = None
        for lost in set(ids) - held:
            if lost in self._running:
                logger.warning(
                    "execution %s: lease lost to another runner; this "
                    "runner's next write for it will be refused",
                    lost,
                )

    # Running ---------------------------------------------------------------

    async def run(
        self,
        wf: Callable[..., Awaitable[T]] | str,
        *args: Any,
        execution_id: str | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``wf`` to its end and return its output.

        With an ``execution_id`` that exists, nothing new starts: the recorded
        output is returned, the recorded failure raised, or the unfinished run
        resumed.
        """
        definition, execution_id, created = await self._create(
            wf, args, kwargs, execution_id
        )
        if execution_id in self._tasks:
            return await asyncio.shield(self._tasks[execution_id])
        if not created:
            return await self.resume(execution_id)  # type: ignore[no-any-return]
        return await self._drive(definition, execution_id, args, kwargs, None)  # type: ignore[no-any-return]

    async def start(
        self,
        wf: Callable[..., Awaitable[Any]] | str,
        *args: Any,
        execution_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Record the execution, run it in the background, return its id."""
        definition, execution_id, created = await self._create(
            wf, args, kwargs, execution_id
        )
        if execution_id in self._tasks:
            return execution_id
        if created:
            coro = self._drive(definition, execution_id, args, kwargs, None)
        else:
            coro = self.resume(execution_id)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[execution_id] = task
        task.add_done_callback(lambda t: self._background_done(execution_id, t))
        return execution_id

    def _background_done(self, execution_id: str, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(execution_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.info(
                "execution %s (background) ended with %s: %s",
                execution_id,
                type_name(exc),
                exc,
            )

    async def _create(
        self,
        wf: Callable[..., Awaitable[Any]] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        execution_id: str | None,
    ) -> tuple[WorkflowDef, str, bool]:
        definition = workflow_definition(wf)
        await self._ready()
        if execution_id is None:
            execution_id = new_execution_id()
        elif not isinstance(execution_id, str) or not execution_id.strip():
            raise ConfigurationError(
                f"execution_id must be a non-empty string, not {execution_id!r}"
            )
        input_text = encode_arguments(definition.fn, args, kwargs)
        created = await self.store.create_execution(
            execution_id, definition.name, input_text, self.owner, self.lease_seconds
        )
        if not created:
            existing = await self.store.get_execution(execution_id)
            if existing.workflow != definition.name:
                raise ConfigurationError(
                    f"execution {execution_id} belongs to workflow "
                    f"{existing.workflow!r}, not {definition.name!r}; use a new "
                    "execution id",
                    execution_id=execution_id,
                )
            if existing.input != _json.loads(input_text):
                raise ConfigurationError(
                    f"execution {execution_id} was started with other arguments "
                    f"({existing.input}) than now ({input_text}); an execution "
                    "id names one run: use a new id for new arguments",
                    execution_id=execution_id,
                )
        return definition, execution_id, created

    async def resume(self, execution_id: str) -> Any:
        """Continue a recorded execution from its first unrecorded step.

        A completed execution returns its recorded output and a failed one
        raises its recorded failure, without running any step. Raises
        ``ExecutionBusy`` when a live runner owns it.
        """
        await self._ready()
        if execution_id in self._tasks:
            return await asyncio.shield(self._tasks[execution_id])
        if execution_id in self._running:
            raise ExecutionBusy(
                f"execution {execution_id} is already running in this runtime",
                execution_id=execution_id,
                owner=self.owner,
            )
        claim = await self.store.claim(execution_id, self.owner, self.lease_seconds)
        if not claim.claimed and claim.holder and _owner_is_dead_here(claim.holder):
            logger.info(
                "execution %s: owner %s is dead on this host; taking over",
                execution_id,
                claim.holder,
            )
            claim = await self.store.claim(
                execution_id,
                self.owner,
                self.lease_seconds,
                steal_from=claim.holder,
            )
        return await self._resume_claim(claim)

    async def _resume_claim(self, claim: Claim) -> Any:
        execution = claim.execution
        execution_id = execution.execution_id
        if execution.status is ExecutionStatus.COMPLETED:
            definition = workflow_definition(execution.workflow)
            return definition.codec.decode(json.dumps(execution.output))
        if execution.status is ExecutionStatus.FAILED:
            raise rebuild_error(execution.error or {}, execution_id)
        if not claim.claimed:
            raise ExecutionBusy(
                f"execution {execution_id} is owned by the live runner "
                f"{claim.holder}, whose lease expires at "
                f"{execution.lease_expires_at}; resume it after that, or let "
                "recover() take it over once the lease has expired",
                execution_id=execution_id,
                owner=claim.holder,
            )
        try:
            definition = workflow_definition(execution.workflow)
            args, kwargs = decode_arguments(definition.fn, execution.input)
        except BaseException:
            await self._release(execution_id)
            raise
        logger.info(
            "execution %s: resuming %s with %d recorded steps",
            execution_id,
            definition.name,
            len(claim.checkpoints),
        )
        return await self._drive(definition, execution_id, args, kwargs, claim)

    async def recover(self, *, limit: int = DEFAULT_RECOVER_LIMIT) -> list[str]:
        """Resume executions whose runner died; return the ids resumed.

        Takes the executions whose lease has expired (and those owned by a
        dead process on this host), runs them concurrently to their end, and
        returns their ids. Their outcomes are in the journal.
        """
        await self._ready()
        expired = await self.store.claim_expired(self.owner, self.lease_seconds, limit)
        # The leases are ours now; claiming again loads each journal.
        claims = [
            await self.store.claim(execution_id, self.owner, self.lease_seconds)
            for execution_id in expired
        ]
        if len(claims) < limit:
            claims += await self._claim_dead_local(limit - len(claims), set(expired))
        ids = [claim.execution.execution_id for claim in claims]
        results = await asyncio.gather(
            *(self._resume_claim(claim) for claim in claims), return_exceptions=True
        )
        for execution_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning(
                    "execution %s: recovered run ended with %s: %s",
                    execution_id,
                    type_name(result),
                    result,
                )
        return ids

    async def _claim_dead_local(self, limit: int, exclude: set[str]) -> list[Claim]:
        taken: list[Claim] = []
        async for execution in self.executions(status=ExecutionStatus.RUNNING):
            if len(taken) >= limit:
                break
            owner = execution.owner
            if execution.execution_id in exclude or not owner:
                continue
            if not _owner_is_dead_here(owner):
                continue
            claim = await self.store.claim(
                execution.execution_id,
                self.owner,
                self.lease_seconds,
                steal_from=owner,
            )
            if claim.claimed:
                taken.append(claim)
        return taken

    async def _release(self, execution_id: str) -> None:
        try:
            await self.store.release(execution_id, self.owner)
        except Exception as exc:
            # The lease then simply expires; nothing is lost.
            logger.warning(
                "execution %s: could not release lease: %s", execution_id, exc
            )

    async def _drive(
        self,
        definition: WorkflowDef,
        execution_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        claim: Claim | None,
    ) -> Any:
        run = Run(self.store, self.owner, execution_id, claim)
        self._running[execution_id] = run
        token = _current_run.set(run)
        finished = False
        try:
            try:
                output = await definition.fn(*args, **kwargs)
            except Exception as exc:
                if run.crash is not None or isinstance(exc, _UNRECORDED):
                    raise
                await self.store.finish(
                    execution_id,
                    self.owner,
                    ExecutionStatus.FAILED,
                    error=encode_error(exc),
                )
                finished = True
                logger.info("execution %s failed with %s", execution_id, type_name(exc))
                raise
            if run.crash is not None:
                raise run.crash
            run.check_complete()
            output_text = definition.codec.encode(output)
            hook = active_hook()
            if hook is not None:
                hook(CrashSite(CrashPhase.BEFORE_COMPLETE, execution_id))
            await self.store.finish(
                execution_id,
                self.owner,
                ExecutionStatus.COMPLETED,
                output=output_text,
            )
            finished = True
            return output
        finally:
            _current_run.reset(token)
            del self._running[execution_id]
            if not finished:
                await self._release(execution_id)

    # Reading the journal -------------------------------------------------

    async def execution(self, execution_id: str) -> Execution:
        """The execution's status, input, output, error and times."""
        await self._ready()
        return await self.store.get_execution(execution_id)

    async def history(self, execution_id: str) -> list[Event]:
        """The execution's journal, in the order it was written."""
        await self._ready()
        return await self.store.history(execution_id)

    async def executions(
        self,
        status: ExecutionStatus | str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Execution]:
        """Executions in creation order, filtered, at most ``limit`` of them."""
        await self._ready()
        wanted = None if status is None else _status(status)
        page_size = 200
        seen = 0
        after: str | None = None
        while limit is None or seen < limit:
            size = page_size if limit is None else min(page_size, limit - seen)
            page = await self.store.list_executions(
                status=wanted, workflow=workflow, limit=size, after=after
            )
            for execution in page:
                yield execution
            seen += len(page)
            if len(page) < size:
                return
            after = page[-1].execution_id


def _status(value: ExecutionStatus | str) -> ExecutionStatus:
    try:
        return ExecutionStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in ExecutionStatus)
        raise ConfigurationError(
            f"unknown execution status {value!r}; use one of {valid}"
        ) from None
