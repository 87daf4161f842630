"""explore() beyond single in-process crashes: deeper schedules, kill mode,
racing resumers and cut database connections, on real stores."""

from __future__ import annotations

import pytest
import workflows_for_kill as wfk

from pytest_waypoint.harness import Chaos
from pytest_waypoint.invariants import (
    Fault,
    Invariant,
    Outcome,
    ScenarioRun,
    check_alone,
)
from pytest_waypoint.schedule import Schedule
from pytest_waypoint.search import plan_schedules
from waypoint import MemoryStore, Store, checkpoint, workflow
from waypoint.errors import ConfigurationError
from waypoint.journal import ExecutionStatus


async def test_three_crashes_are_explored_exhaustively_when_few(
    local_store: Store,
) -> None:
    report = await Chaos(local_store, max_crashes=3).explore(wfk.pipeline, 1)

    total = plan_schedules(report.points, max_crashes=3).total
    assert report.ok
    assert report.plan.startswith(f"exhaustive: all {total} feasible schedules")
    assert len(report.scenarios) == total
    assert max(len(s.schedule) for s in report.scenarios) == 3
    # Every crash fired, then one fault-free resume finished the run.
    assert all(len(s.run.segments) == len(s.schedule) + 1 for s in report.scenarios)


async def test_over_the_budget_the_search_samples_and_says_so(
    local_store: Store,
) -> None:
    report = await Chaos(local_store, max_crashes=2, max_scenarios=12, seed=4).explore(
        wfk.pipeline, 2
    )

    assert report.sampled
    assert len(report.scenarios) == 12
    assert "sampled: 12 of 65 feasible schedules of up to 2 crashes" in report.summary()
    assert "(seed 4)" in report.summary()


async def test_racing_resumers_after_each_crash(store: Store) -> None:
    report = await Chaos(store, racers=3).explore(wfk.pipeline, 2)

    races = [s for s in report.scenarios if s.fault is Fault.RACE]
    assert report.ok
    assert len(races) == len(report.points)
    assert "+ 10 race scenarios" in report.summary()
    # One resumer ran each crashed execution; the crash's segment comes first.
    assert all(len(s.run.segments) == 2 for s in races)


def test_a_race_with_two_runners_breaks_invariant_7() -> None:
    outcome = Outcome(ExecutionStatus.COMPLETED, "x", None, (), {})
    run = ScenarioRun(
        Schedule(),
        "e",
        [],
        outcome,
        Fault.RACE,
        "2 resumers",
        ("2 resumers ran execution e, not exactly one",),
    )

    # (The empty journal breaks invariant 3 as well.)
    [violation] = [v for v in check_alone(run) if v.invariant == 7]

    assert violation.invariant is Invariant.ONE_RESUMER
    assert "fault:     race: 2 resumers" in violation.describe()


@pytest.mark.postgres
async def test_cut_connections_at_each_commit_on_postgres() -> None:
    from pytest_waypoint._postgres import isolated_store

    async with isolated_store() as pg:
        report = await Chaos(pg, faults=("crash", "db")).explore(wfk.pipeline, 2)

    cuts = [s for s in report.scenarios if s.fault is Fault.DB]
    assert report.ok
    assert len(cuts) == 2 * 3  # both cuts at each of the 3 checkpoints
    assert {s.run.detail for s in cuts} >= {
        "connection cut before_commit of fetch#1's checkpoint",
        "connection cut after_commit of publish#1's checkpoint",
    }


async def test_db_faults_are_skipped_with_a_note_elsewhere(local_store: Store) -> None:
    report = await Chaos(local_store, faults=("crash", "db")).explore(wfk.pipeline, 1)

    assert report.ok
    assert not [s for s in report.scenarios if s.fault is Fault.DB]
    assert "database faults skipped: " in report.text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("pg", marks=pytest.mark.postgres)]
)
async def test_kill_mode_explores_in_children(backend: str, tmp_path) -> None:
    from pytest_waypoint._postgres import isolated_store
    from waypoint import SQLiteStore

    async def explore(store: Store) -> None:
        report = await Chaos(store, max_scenarios=2, seed=1, mode="kill").explore(
            wfk.pipeline, 1
        )
        assert report.ok
        assert report.mode == "kill"
        assert len(report.scenarios) == 2

    if backend == "sqlite":
        async with SQLiteStore(tmp_path / "j.db") as store:
            await explore(store)
    else:
        async with isolated_store() as pg:
            await explore(pg)


@checkpoint
async def _noop() -> int:
    return 1


async def test_kill_mode_needs_an_importable_workflow_and_a_shared_store(
    tmp_path,
) -> None:
    from waypoint import SQLiteStore

    @workflow(name="defined_in_a_test")
    async def local() -> int:
        return await _noop()

    async with SQLiteStore(tmp_path / "j.db") as store:
        with pytest.raises(ConfigurationError, match="cannot be imported: define"):
            await Chaos(store, mode="kill").explore(local)
    with pytest.raises(ConfigurationError, match="lives in this process only"):
        await Chaos(MemoryStore(), mode="kill").explore(wfk.pipeline)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fork"}, "unknown crash mode 'fork'; choose one of inprocess, kill"),
        ({"racers": 1}, "0 for no races, or 2 or more"),
        ({"faults": ("db",)}, "give 'crash' and optionally 'db'"),
    ],
)
def test_bad_options_name_the_choices(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Chaos(MemoryStore(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_command_runs_kill_mode_races_and_db_faults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from waypoint.cli import main

    target = "workflows_for_kill:pipeline"
    killed = main(["chaos", target, "--arg=1", "--mode=kill", "--max-scenarios=1"])
    out = capsys.readouterr().out
    raced = main(["chaos", target, "--arg=1", "--racers=2", "--db-faults"])
    more = capsys.readouterr().out

    assert killed == 0
    assert "1 scenarios kill, of 7 crash points\n  schedules: sampled: 1 of 7" in out
    assert raced == 0
    assert "+ 7 race scenarios" in more
    assert "database faults skipped: SQLiteStore" in more
