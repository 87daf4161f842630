"""The ``waypoint`` command's journal views: executions and history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from waypoint import Waypoint, checkpoint, workflow
from waypoint.cli import main


@checkpoint
async def shout(word: str) -> str:
    return word.upper()


@workflow
async def shouting(word: str) -> str:
    return await shout(word)


@pytest.fixture
def journal(tmp_path: Path) -> str:
    dsn = f"sqlite:///{tmp_path / 'j.db'}"

    async def fill() -> None:
        async with Waypoint(dsn) as wp:
            await wp.run(shouting, "hi", execution_id="cli-1")

    asyncio.run(fill())
    return dsn


def test_executions_lists_ids_status_and_workflow(
    journal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["executions", "--dsn", journal]) == 0
    assert capsys.readouterr().out.split() == [
        "cli-1",
        "completed",
        "test_cli.shouting",
    ]


def test_history_prints_the_journal_in_order(
    journal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["history", "cli-1", "--dsn", journal]) == 0
    kinds = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert kinds == [
        "execution_started",
        "step_started",
        "step_completed",
        "execution_completed",
    ]


def test_an_unknown_execution_is_an_error_not_a_traceback(
    journal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["history", "nope", "--dsn", journal]) == 1
    assert "no execution 'nope'" in capsys.readouterr().err


def test_chaos_names_a_module_it_cannot_import(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["chaos", "no_such_package.agents:research"]) == 1
    err = capsys.readouterr().err
    assert "cannot import 'no_such_package.agents'" in err
    assert "PYTHONPATH" in err


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("examples.agent_with_llm_mock:json", "<module 'json'"),
        ("examples.agent_with_llm_mock:search", "'search'"),
    ],
    ids=["a_module", "a_step"],
)
def test_chaos_refuses_a_target_that_is_not_a_workflow(
    target: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chaos", target, "--arg", '"q"']) == 1

    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"waypoint: {named}")
    assert line.endswith("is not a workflow: decorate it with @workflow")
