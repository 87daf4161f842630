"""Concurrent resumers: several runtimes race to resume one crashed execution.

The lease is what makes this safe: the first runtime to claim the execution
runs it; the others are refused with ``ExecutionBusy`` while it runs, or get
the recorded output once it has finished. A race is run either as asyncio
tasks in this process, each with a runtime of its own, or as child processes
released together from a start gate (see ``pytest_waypoint.kill``).

Each resumer's crash hook records the sites it passed, which tells who ran
which step body (``@after_effect``) and who committed which checkpoint
(``@after_commit``); ``RaceReport.problems()`` names any step run twice.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections import Counter
from dataclasses import dataclass

from pytest_waypoint.kill import (
    DEFAULT_TIMEOUT,
    ChildOutcome,
    ChildProcess,
    ChildStatus,
)
from waypoint.decorators import workflow_definition
from waypoint.errors import ConfigurationError, ExecutionBusy
from waypoint.hooks import CrashPhase, CrashSite, armed
from waypoint.runtime import Waypoint
from waypoint.serialization import Codec, type_name
from waypoint.stores.base import Store

__all__ = [
    "RaceReport",
    "ResumerResult",
    "ResumerRole",
    "race_resumer_processes",
    "race_resumers",
]

#: Resumers per race unless told otherwise: two is the smallest race.
DEFAULT_RESUMERS = 2


class ResumerRole(enum.StrEnum):
    """What one resumer did in a race."""

    RAN = "ran"  # claimed the execution and drove it
    BUSY = "busy"  # refused with ExecutionBusy while another ran it
    REPLAYED = "replayed"  # came after the end and got the recorded output
    FAILED = "failed"  # raised anything else (error_type says what)


@dataclass(frozen=True, slots=True)
class ResumerResult:
    index: int
    role: ResumerRole
    sites: tuple[str, ...] = ()
    output_json: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    pid: int | None = None
    positions: tuple[int | None, ...] = ()

    def phase_points(self, phase: CrashPhase) -> list[str]:
        """The step points this resumer passed at ``phase``."""
        suffix = f"@{phase.value}"
        return [s for s in self.sites if s.endswith(suffix) and not s.startswith("@")]


@dataclass(frozen=True, slots=True)
class RaceReport:
    execution_id: str
    results: tuple[ResumerResult, ...]

    @property
    def runners(self) -> list[ResumerResult]:
        return [r for r in self.results if r.role is ResumerRole.RAN]

    def problems(self) -> list[str]:
        """What broke the rules of a race; empty when it was sound."""
        found = []
        runners = self.runners
        if len(runners) != 1:
            found.append(
                f"{len(runners)} resumers ran execution {self.execution_id}, "
                "not exactly one"
            )
        found.extend(
            f"resumer {r.index} failed with {r.error_type}: {r.error_message}"
            for r in self.results
            if r.role is ResumerRole.FAILED
        )
        for phase, what in (
            (CrashPhase.AFTER_EFFECT, "ran the body of"),
            (CrashPhase.AFTER_COMMIT, "committed"),
        ):
            counts = Counter(
                point for r in self.results for point in r.phase_points(phase)
            )
            for point, count in sorted(counts.items()):
                if count > 1:
                    step = point.rpartition("@")[0]
                    found.append(f"{count} resumers {what} step {step}")
        outputs = {r.output_json for r in self.results if r.output_json is not None}
        if len(outputs) > 1:
            found.append(f"resumers returned different outputs: {sorted(outputs)}")
        return found


def _check_count(resumers: int) -> None:
    if not isinstance(resumers, int) or resumers < 2:
        raise ConfigurationError(f"a race needs at least 2 resumers, not {resumers!r}")


def _canonical(text: str) -> str:
    # In-process and child outputs compare alike as sorted JSON text.
    return json.dumps(json.loads(text), sort_keys=True)


async def _resume_one(
    index: int,
    runtime: Waypoint,
    execution_id: str,
    codec: Codec,
    start: asyncio.Event,
) -> ResumerResult:
    sites: list[str] = []
    positions: list[int | None] = []

    def hook(site: CrashSite) -> None:
        if site.execution_id == execution_id:
            sites.append(site.point)
            positions.append(site.position)

    def result(
        role: ResumerRole,
        output_json: str | None = None,
        error: Exception | None = None,
    ) -> ResumerResult:
        return ResumerResult(
            index,
            role,
            tuple(sites),
            output_json,
            None if error is None else type_name(error),
            None if error is None else str(error),
            positions=tuple(positions),
        )

    await start.wait()
    try:
        with armed(hook):
            output = await runtime.resume(execution_id)
    except ExecutionBusy as exc:
        role = ResumerRole.RAN if sites else ResumerRole.BUSY
        return result(role, error=exc)
    except Exception as exc:
        return result(ResumerRole.FAILED, error=exc)
    text = _canonical(codec.encode(output))
    return result(ResumerRole.RAN if sites else ResumerRole.REPLAYED, text)


async def race_resumers(
    store: Store | str, execution_id: str, resumers: int = DEFAULT_RESUMERS
) -> RaceReport:
    """Race ``resumers`` fresh runtimes in this process to resume one execution.

    With a DSN each runtime opens its own store (its own connection); with a
    ``Store`` they share it, which is the only way for ``MemoryStore``. The
    workflow's module must be imported here. All runtimes are opened first,
    then released together.
    """
    _check_count(resumers)
    runtimes = [Waypoint(store) for _ in range(resumers)]
    start = asyncio.Event()
    try:
        for runtime in runtimes:
            await runtime.open()
        execution = await runtimes[0].execution(execution_id)
        codec = workflow_definition(execution.workflow).codec
        tasks = [
            asyncio.create_task(_resume_one(i, rt, execution_id, codec, start))
            for i, rt in enumerate(runtimes)
        ]
        start.set()
        results = await asyncio.gather(*tasks)
    finally:
        for runtime in runtimes:
            await runtime.close()
    return RaceReport(execution_id, tuple(results))


def _from_child(index: int, outcome: ChildOutcome) -> ResumerResult:
    ran = bool(outcome.sites)
    if outcome.status is ChildStatus.COMPLETED:
        role = ResumerRole.RAN if ran else ResumerRole.REPLAYED
    elif outcome.error_type == type_name(ExecutionBusy) and not ran:
        role = ResumerRole.BUSY
    elif ran and outcome.status is ChildStatus.FAILED:
        role = ResumerRole.RAN
    else:
        role = ResumerRole.FAILED
    message = outcome.error_message
    if outcome.status not in (ChildStatus.COMPLETED, ChildStatus.FAILED):
        message = outcome.describe()
    output = None if outcome.output_json is None else _canonical(outcome.output_json)
    return ResumerResult(
        index,
        role,
        outcome.sites,
        output,
        outcome.error_type,
        message,
        outcome.pid,
        outcome.positions,
    )


async def race_resumer_processes(
    target: str,
    *,
    dsn: str,
    execution_id: str,
    resumers: int = DEFAULT_RESUMERS,
    timeout: float = DEFAULT_TIMEOUT,
) -> RaceReport:
    """Race ``resumers`` child processes to resume one execution.

    ``target`` names the workflow's module for the children to import, as in
    ``run_child``. Each child opens its runtime and waits at a gate; all are
    released together once every one is ready.
    """
    _check_count(resumers)
    children: list[ChildProcess] = []
    try:
        for _ in range(resumers):
            child = await ChildProcess.start(
                target, dsn=dsn, execution_id=execution_id, resume=True, gate=True
            )
            children.append(child)
        await asyncio.gather(*(child.ready(timeout) for child in children))
        for child in children:
            child.go()
        outcomes = await asyncio.gather(*(c.outcome(timeout) for c in children))
    except BaseException:
        await asyncio.shield(asyncio.gather(*(c.kill() for c in children)))
        raise
    return RaceReport(
        execution_id, tuple(_from_child(i, o) for i, o in enumerate(outcomes))
    )
