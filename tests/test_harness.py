"""The chaos harness driven directly, on real stores: scenario counts, the
matrix, LLM accounting, sampling, crash pairs, the invariant checks on their
own, and the ``waypoint chaos`` command."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pytest_waypoint import effects
from pytest_waypoint.harness import Chaos, ReferenceRunFailed, ScheduledWaypoint
from pytest_waypoint.invariants import (
    Invariant,
    Outcome,
    ScenarioRun,
    Segment,
    check_alone,
)
from pytest_waypoint.llm import FakeLLM
from pytest_waypoint.report import ChaosViolation
from pytest_waypoint.schedule import Schedule, parse_point
from waypoint import Store, checkpoint, workflow
from waypoint.cli import main
from waypoint.hooks import CrashSite
from waypoint.journal import Checkpoint, Event, EventKind, ExecutionStatus

model = FakeLLM(lambda prompt: f"answer to {prompt}")


@checkpoint
async def ask(question: str) -> str:
    return await model.complete(question)


@checkpoint
async def store_answer(answer: str) -> int:
    await effects.apply("store answer", answer)
    return len(answer)


@workflow
async def three_questions(topic: str) -> list[str]:
    answers = [await ask(f"{topic} {n}") for n in range(3)]
    await store_answer(answers[-1])
    return answers


@workflow
async def always_fails(topic: str) -> str:
    await ask(topic)
    raise ValueError(f"no answer for {topic}")


async def test_every_single_crash_is_explored(local_store: Store) -> None:
    report = await Chaos(local_store).explore(three_questions, "tides")

    # 4 steps x 3 phases, and once before completion.
    assert len(report.scenarios) == 13
    assert report.ok
    assert not report.violations
    assert not report.unfired
    assert report.reruns == 4  # each after_effect crash re-runs one body
    summary, table = report.matrix().split("\n\n")
    assert summary.splitlines()[0] == (
        "crash matrix of test_harness.three_questions: 13 scenarios "
        "in-process, of 13 crash points"
    )
    assert table.splitlines() == [
        "step              before  after_effect  after_commit",
        "ask#1             ok      ok rerun 1    ok",
        "ask#2             ok      ok rerun 1    ok",
        "ask#3             ok      ok rerun 1    ok",
        "store_answer#1    ok      ok rerun 1    ok",
        "@before_complete  ok",
    ]


async def test_llm_calls_served_from_the_journal_are_counted(
    local_store: Store,
) -> None:
    report = await Chaos(local_store).explore(three_questions, "tides")

    # A crash at ask#k before or after_effect leaves k-1 answers in the
    # journal, after_commit leaves k; past the last ask, all 3.
    # Saved: (0+1+2) + (0+1+2) + (1+2+3) + 3*3 (store_answer) + 3.
    assert report.llm_saved.calls == 3 + 3 + 6 + 9 + 3
    assert report.llm_saved.tokens > report.llm_saved.calls


async def test_a_recorded_failure_is_the_expected_outcome(local_store: Store) -> None:
    report = await Chaos(local_store).explore(always_fails, "x")

    assert report.reference.outcome.status is ExecutionStatus.FAILED
    assert report.ok
    assert len(report.scenarios) == 3


async def test_a_budget_samples_with_the_seed(local_store: Store) -> None:
    first = await Chaos(local_store, max_scenarios=5, seed=3).explore(
        three_questions, "a"
    )
    again = await Chaos(local_store, max_scenarios=5, seed=3).explore(
        three_questions, "a"
    )

    assert first.sampled
    assert first.planned == 13
    assert len(first.scenarios) == 5
    assert [s.schedule for s in first.scenarios] == [
        s.schedule for s in again.scenarios
    ]
    assert "sampled: 5 of 13 feasible schedules" in first.summary()
    assert "(seed 3); 5 of 13 single crashes" in first.summary()
    assert "skipped" in first.matrix()


async def test_two_crashes_explore_a_crash_in_each_resume(local_store: Store) -> None:
    report = await Chaos(local_store, max_crashes=2).explore(three_questions, "a")

    pairs = [s for s in report.scenarios if len(s.schedule) == 2]
    assert report.ok
    assert pairs
    assert all(len(s.run.segments) == 3 for s in pairs)
    assert Schedule.of(["ask#1@after_commit", "ask#2@after_effect"]) in {
        s.schedule for s in pairs
    }


async def test_a_point_that_never_fires_fails_the_exploration(
    local_store: Store,
) -> None:
    chaos = Chaos(local_store, schedules=[Schedule.of(["ask#7@before"])])

    with pytest.raises(ChaosViolation) as failure:
        await chaos.explore(three_questions, "a")

    assert "crash point ask#7@before of schedule ask#7@before never fired" in str(
        failure.value
    )


async def test_a_workflow_that_cannot_run_once_is_refused(local_store: Store) -> None:
    @checkpoint(name="unstorable")
    async def unstorable() -> dict[str, object]:
        return {"lock": asyncio.Lock()}

    @workflow(name="cannot_record_its_step")
    async def cannot_record() -> None:
        await unstorable()

    # A SerializationError leaves the execution running, to be fixed in code.
    with pytest.raises(ReferenceRunFailed, match="uncrashed run of workflow"):
        await Chaos(local_store).explore(cannot_record)


# The invariants on their own ----------------------------------------------


def _outcome(*entries: tuple[EventKind, int | None]) -> Outcome:
    """A completed execution's outcome: a checkpoint per STEP_COMPLETED entry
    (at its position), an event row for every other entry."""
    at = datetime.now(UTC).timestamp()
    return Outcome(
        status=ExecutionStatus.COMPLETED,
        output=None,
        error=None,
        events=tuple(
            Event(n, "e", kind, at, position, "s")
            for n, (kind, position) in enumerate(entries)
            if kind is not EventKind.STEP_COMPLETED
        ),
        effects={},
        checkpoints=tuple(
            Checkpoint(position, "s", "", 1, "null", at, at)
            for kind, position in entries
            if kind is EventKind.STEP_COMPLETED and position is not None
        ),
    )


def _site(text: str, position: int | None) -> CrashSite:
    return parse_point(text).site("e", position)


def test_a_committed_step_that_runs_again_breaks_invariant_1() -> None:
    crashed = Segment(resume=False, crashed_at=parse_point("s#1@after_commit"))
    crashed.sites = [
        _site("s#1@before", 0),
        _site("s#1@after_effect", 0),
        _site("s#1@after_commit", 0),
    ]
    resumed = Segment(resume=True, sites=[_site("s#1@before", 0)])
    run = ScenarioRun(
        Schedule.of(["s#1@after_commit"]),
        "e",
        [crashed, resumed],
        _outcome((EventKind.STEP_COMPLETED, 0), (EventKind.EXECUTION_COMPLETED, None)),
    )

    [violation] = check_alone(run)
    assert violation.invariant is Invariant.NO_RERUN_AFTER_COMMIT


def test_a_second_checkpoint_at_a_position_breaks_invariant_3() -> None:
    run = ScenarioRun(
        Schedule(),
        "e",
        [Segment(resume=False)],
        _outcome(
            (EventKind.STEP_COMPLETED, 0),
            (EventKind.STEP_COMPLETED, 0),
            (EventKind.STEP_COMPLETED, 2),
            (EventKind.EXECUTION_COMPLETED, None),
        ),
    )

    [violation] = check_alone(run)
    assert violation.invariant is Invariant.JOURNAL_WELL_FORMED
    assert (
        violation.actual
        == "2 checkpoints at position 0; no checkpoint at positions [1]"
    )


# The command ----------------------------------------------------------------

CHAOS_MODULE = """
from waypoint import checkpoint, workflow
from pytest_waypoint import effects


@checkpoint
async def pay(amount: int) -> int:
    await effects.apply("pay", key=KEY)
    return amount


@workflow
async def checkout(amount: int, times: int = 1) -> int:
    return sum([await pay(amount) for _ in range(times)])
"""


@pytest.fixture
def chaos_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good_checkout.py").write_text(
        "from pytest_waypoint.effects import DEFAULT_KEY as KEY\n" + CHAOS_MODULE
    )
    (tmp_path / "bad_checkout.py").write_text("KEY = None\n" + CHAOS_MODULE)
    yield tmp_path
    for name in ("good_checkout", "bad_checkout"):
        sys.modules.pop(name, None)


def test_the_command_passes_a_correct_workflow(
    chaos_module: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["chaos", "good_checkout:checkout", "--arg", "5", "--kwarg", "times=2"])

    out = capsys.readouterr().out
    assert code == 0
    assert "crash matrix of good_checkout.checkout: 7 scenarios" in out
    assert "0 with violations, 2 step re-runs, 0 points never fired" in out
    assert "pay#2             ok      ok rerun 1    ok" in out
    assert not list(chaos_module.glob("*.db"))  # a temporary file by default


def test_the_command_fails_a_broken_workflow_with_a_reproduction(
    chaos_module: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["chaos", "bad_checkout:checkout", "--arg", "5"])

    out = capsys.readouterr().out
    assert code == 1
    assert "invariant 4 broken" in out
    assert (
        "reproduce: waypoint chaos bad_checkout:checkout --arg=5 "
        "'--schedule=pay#1@after_effect'"
    ) in out


def test_the_command_runs_one_schedule_on_a_given_store(
    chaos_module: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = f"sqlite:///{chaos_module / 'kept.db'}"
    code = main(
        [
            "chaos",
            "bad_checkout:checkout",
            "--arg=5",
            f"--dsn={dsn}",
            "--schedule=pay#1@before",
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert (
        "1 scenarios in-process, of 4 crash points\n  schedules: the given schedule\n"
        in out
    )
    assert (chaos_module / "kept.db").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chaos", "good_checkout"], "write package.module:function"),
        (["chaos", "good_checkout:nope"], "has no attribute 'nope'"),
        (["chaos", "good_checkout:checkout", "--arg", "five"], "is not JSON"),
        (["chaos", "good_checkout:checkout"], "the arguments do not fit"),
    ],
)
def test_the_command_explains_a_bad_argument(
    chaos_module: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


@workflow(name="asks_about_the_time")
async def asks_about_the_time() -> str:
    await ask("what time is it")
    return await ask(f"it is {time.time()}")


async def test_a_scheduled_runtime_reports_a_divergence(local_store: Store) -> None:
    runtime = ScheduledWaypoint(local_store, Schedule.of(["ask#2@after_commit"]))

    async with runtime:
        with pytest.raises(ChaosViolation, match="invariant 5 broken"):
            await runtime.run(asks_about_the_time)

    assert runtime.never_fired() is None
