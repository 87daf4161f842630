"""Kill mode: real child processes, real SIGKILL, real SQLite and PostgreSQL.

Each test drives ``pytest_waypoint.kill.run_child`` against a journal the
parent also holds open, then reads the journal and the effect ledger from the
parent: the child's word is never taken for what the database says.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import workflows_for_kill as wfk

from pytest_waypoint import kill
from pytest_waypoint.kill import ChildProcess, ChildStatus, child_dsn, run_child
from pytest_waypoint.schedule import CrashPoint, parse_point
from waypoint import (
    EventKind,
    ExecutionStatus,
    MemoryStore,
    SQLiteStore,
    Store,
    Waypoint,
)
from waypoint.errors import ConfigurationError, WaypointError
from waypoint.hooks import CrashHook, CrashSite, SimulatedCrash, armed

pytestmark = pytest.mark.slow

PIPELINE = "workflows_for_kill:pipeline"
EXPECTED = "ITEM-0,ITEM-1,ITEM-2"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def journal(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        async with SQLiteStore(tmp_path / "journal.db") as store:
            yield store
        return
    pytest.importorskip("asyncpg", reason="PostgreSQL kill mode needs asyncpg")
    from pytest_waypoint._postgres import isolated_store

    async with isolated_store() as pg:
        yield pg


async def _ledger(store: Store, execution_id: str) -> dict[str, int]:
    """Ledger key -> requests sent with it (a re-run sends its key again)."""
    return await store.effect_counts(prefix=f"{execution_id}|")


async def _checkpoint_positions(store: Store, execution_id: str) -> list[int]:
    history = await store.history(execution_id)
    return [
        e.position
        for e in history
        if e.kind is EventKind.STEP_COMPLETED and e.position is not None
    ]


async def test_crash_after_commit_never_runs_the_step_again(journal: Store) -> None:
    dsn = child_dsn(journal)

    crashed = await run_child(
        PIPELINE,
        dsn=dsn,
        execution_id="e1",
        args_json="[3]",
        crash_at=parse_point("fetch#2@after_commit"),
    )
    assert crashed.status is ChildStatus.CRASHED, crashed.describe()
    assert crashed.returncode == -signal.SIGKILL
    assert crashed.point == "fetch#2@after_commit"
    resumed = await run_child(PIPELINE, dsn=dsn, execution_id="e1", resume=True)

    assert resumed.status is ChildStatus.COMPLETED, resumed.describe()
    assert resumed.output() == EXPECTED
    assert "fetch#2@before" not in resumed.sites
    assert resumed.sites[0] == "fetch#3@before"
    assert set((await _ledger(journal, "e1")).values()) == {1}
    assert await _checkpoint_positions(journal, "e1") == [0, 1, 2, 3]


async def test_crash_after_effect_reruns_with_the_same_key(journal: Store) -> None:
    dsn = child_dsn(journal)
    reference = await run_child(PIPELINE, dsn=dsn, execution_id="ref", args_json="[3]")

    await run_child(
        PIPELINE,
        dsn=dsn,
        execution_id="e2",
        args_json="[3]",
        crash_at=parse_point("fetch#2@after_effect"),
    )
    resumed = await run_child(PIPELINE, dsn=dsn, execution_id="e2", resume=True)

    assert resumed.output_json == reference.output_json
    assert resumed.sites[:2] == ("fetch#2@before", "fetch#2@after_effect")
    ledger = await _ledger(journal, "e2")
    # The body ran twice with one key: the second request was a duplicate an
    # idempotent API drops, and no request went out under a new key.
    assert ledger == {"e2|e2:0|fetch": 1, "e2|e2:1|fetch": 2, **_rest(ledger)}
    assert len(ledger) == len(await _ledger(journal, "ref"))


def _rest(ledger: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in ledger.items() if k.split("|")[1] not in ("e2:0", "e2:1")}


async def test_crashes_during_resumes(journal: Store) -> None:
    dsn = child_dsn(journal)
    schedule = ["fetch#2@after_effect", "fetch#2@after_effect", "publish#1@before"]

    first = await run_child(
        PIPELINE,
        dsn=dsn,
        execution_id="e3",
        args_json="[3]",
        crash_at=parse_point(schedule[0]),
    )
    later = [
        await run_child(
            PIPELINE,
            dsn=dsn,
            execution_id="e3",
            resume=True,
            crash_at=parse_point(point),
        )
        for point in schedule[1:]
    ]
    final = await run_child(PIPELINE, dsn=dsn, execution_id="e3", resume=True)

    assert [o.point for o in (first, *later)] == schedule
    assert all(o.status is ChildStatus.CRASHED for o in (first, *later))
    assert final.output() == EXPECTED
    assert (await _ledger(journal, "e3"))["e3|e3:1|fetch"] == 3
    assert await _checkpoint_positions(journal, "e3") == [0, 1, 2, 3]
    execution = await journal.get_execution("e3")
    assert execution.status is ExecutionStatus.COMPLETED


async def test_a_point_that_never_fires_is_reported(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'journal.db'}"

    outcome = await run_child(
        PIPELINE,
        dsn=dsn,
        execution_id="e4",
        args_json="[2]",
        crash_at=parse_point("fetch#9@before"),
    )

    assert outcome.status is ChildStatus.COMPLETED
    assert outcome.missed
    assert not outcome.fired


async def test_the_killed_child_is_reaped_so_its_lease_is_free_at_once(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "journal.db")
    crashed = await run_child(
        PIPELINE,
        dsn=child_dsn(store),
        execution_id="e5",
        args_json="[2]",
        crash_at=parse_point("fetch#1@after_effect"),
    )

    async with store, Waypoint(store) as wp:
        execution = await wp.execution("e5")
        assert execution.owner is not None
        assert f":{crashed.pid}:" in execution.owner
        assert await wp.resume("e5") == "ITEM-0,ITEM-1"


async def test_sigkill_skips_finally_where_an_in_process_crash_does_not(
    tmp_path: Path,
) -> None:
    # The workflow buffers items in memory and writes them out in a finally
    # block. An in-process crash is an exception, so the finally runs and the
    # bug hides; SIGKILL loses the buffer and the final output shows it.
    items = '["a", "b", "c"]'
    point = parse_point("collect#2@after_commit")
    store = SQLiteStore(tmp_path / "journal.db")
    async with store, Waypoint(store) as wp:
        reference = await wp.run(
            wfk.buffered, ["a", "b", "c"], str(tmp_path / "ref.txt")
        )
        inproc = str(tmp_path / "inproc.txt")
        with pytest.raises(SimulatedCrash), armed(_crash_once(point)):
            await wp.run(wfk.buffered, ["a", "b", "c"], inproc, execution_id="in")
    async with store, Waypoint(store) as fresh:
        survived_in_process = await fresh.resume("in")

    killed = str(tmp_path / "killed.txt")
    await run_child(
        "workflows_for_kill:buffered",
        dsn=child_dsn(store),
        execution_id="kill",
        args_json=f'[{items}, "{killed}"]',
        crash_at=point,
    )
    after_kill = await run_child(
        "workflows_for_kill:buffered",
        dsn=child_dsn(store),
        execution_id="kill",
        resume=True,
    )

    assert reference == ["a", "b", "c"]
    assert survived_in_process == reference
    assert after_kill.output() == ["c"]


def _crash_once(point: CrashPoint) -> CrashHook:
    fired = False

    def hook(site: CrashSite) -> None:
        nonlocal fired
        if not fired and point.matches(site):
            fired = True
            raise SimulatedCrash(site)

    return hook


async def test_a_failing_workflow_is_reported_as_failed(tmp_path: Path) -> None:
    outcome = await run_child(
        PIPELINE,
        dsn=f"sqlite:///{tmp_path / 'journal.db'}",
        execution_id="e6",
        args_json='["three"]',
    )

    assert outcome.status is ChildStatus.FAILED
    assert outcome.error_type is not None
    assert "three" in (outcome.error_message or "")


async def test_a_child_that_cannot_import_its_workflow_died(tmp_path: Path) -> None:
    outcome = await run_child(
        "no_such_module_here:wf",
        dsn=f"sqlite:///{tmp_path / 'journal.db'}",
        execution_id="e7",
    )

    assert outcome.status is ChildStatus.DIED
    assert "no_such_module_here" in outcome.log
    assert "no_such_module_here" in outcome.describe()


async def test_a_hanging_child_is_killed_at_the_timeout(tmp_path: Path) -> None:
    outcome = await run_child(
        "workflows_for_kill:hangs",
        dsn=f"sqlite:///{tmp_path / 'journal.db'}",
        execution_id="e8",
        timeout=1.0,
    )

    assert outcome.status is ChildStatus.TIMED_OUT
    assert outcome.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "no_colon"}, "package.module:function"),
        ({"args_json": "{}"}, "JSON array"),
        ({"kwargs_json": "not json"}, "JSON text"),
        ({"timeout": 0}, "positive number"),
    ],
)
async def test_bad_arguments_name_the_value_and_the_fix(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    call: dict[str, object] = {
        "target": PIPELINE,
        "dsn": f"sqlite:///{tmp_path / 'journal.db'}",
        "execution_id": "e9",
        **kwargs,
    }
    with pytest.raises(ConfigurationError, match=message):
        await run_child(**call)  # type: ignore[arg-type]


def test_a_memory_store_cannot_be_shared_with_a_child() -> None:
    with pytest.raises(ConfigurationError, match="SQLite file or PostgreSQL"):
        child_dsn(MemoryStore())


async def test_a_gated_child_must_be_released_before_its_outcome(
    tmp_path: Path,
) -> None:
    child = await ChildProcess.start(
        PIPELINE,
        dsn=f"sqlite:///{tmp_path / 'journal.db'}",
        execution_id="e10",
        gate=True,
    )

    with pytest.raises(WaypointError, match=r"needs ready\(\) and go\(\)"):
        await child.outcome()
    assert child.process.returncode == -signal.SIGKILL


@pytest.mark.skipif(not kill.FORK_CHILDREN, reason="needs os.fork")
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_the_zygote_holds_no_connection_of_its_own(journal: Store) -> None:
    # Each child opens its store after the fork; the zygote that forked it
    # never opens one, so no connection is shared between processes.
    dsn = child_dsn(journal)
    crashed = await run_child(
        PIPELINE,
        dsn=dsn,
        execution_id="e11",
        crash_at=parse_point("fetch#1@after_commit"),
    )
    await run_child(PIPELINE, dsn=dsn, execution_id="e11", resume=True)

    assert crashed.status is ChildStatus.CRASHED
    key = tuple(p or os.getcwd() for p in sys.path)
    held = _held_by(kill._zygotes.by_path[key].process.pid)
    # Its one socket is the control socket to this process; a database
    # connection would be a second, and a SQLite journal a file.
    assert sum(link.startswith("socket:") for link in held) == 1, held
    assert not [link for link in held if link.startswith("/") and "journal" in link]


def _held_by(pid: int) -> list[str]:
    """What each of a process's descriptors refers to."""
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        # The zygote closes a reaped child's status pipe just after its
        # report, so one may be gone by now.
        with contextlib.suppress(FileNotFoundError):
            held.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return held
