"""Kill mode's zygote: children forked warm, reaped before their outcome.

The children here import this module by name (``test_zygote:whereabouts``),
so the workflow below tells the test which process started the child and
what environment it saw.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_waypoint import kill
from pytest_waypoint.kill import ChildProcess, ChildStatus, run_child
from pytest_waypoint.schedule import parse_point
from waypoint import workflow

pytestmark = pytest.mark.slow

needs_fork = pytest.mark.skipif(not kill.FORK_CHILDREN, reason="needs os.fork")

TESTS = str(Path(__file__).resolve().parent)


@workflow
async def whereabouts() -> dict[str, Any]:
    return {
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "marker": os.environ.get("WAYPOINT_TEST_MARKER"),
    }


def _dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'journal.db'}"


def _zygote_pid() -> int:
    key = tuple(p or os.getcwd() for p in sys.path)
    return kill._zygotes.by_path[key].process.pid


async def _whereabouts(tmp_path: Path, execution_id: str) -> dict[str, Any]:
    outcome = await run_child(
        "test_zygote:whereabouts", dsn=_dsn(tmp_path), execution_id=execution_id
    )
    assert outcome.status is ChildStatus.COMPLETED, outcome.describe()
    found: dict[str, Any] = outcome.output()
    return found


@needs_fork
async def test_a_child_is_forked_by_the_zygote_not_started_here(
    tmp_path: Path,
) -> None:
    found = await _whereabouts(tmp_path, "w1")

    assert found["ppid"] == _zygote_pid()
    assert found["ppid"] != os.getpid()


@pytest.mark.parametrize(
    "forked", [pytest.param(True, marks=needs_fork), False], ids=["forked", "spawned"]
)
async def test_a_crashed_child_is_reaped_before_its_outcome_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forked: bool
) -> None:
    monkeypatch.setattr(kill, "FORK_CHILDREN", forked)

    crashed = await run_child(
        "workflows_for_kill:pipeline",
        dsn=_dsn(tmp_path),
        execution_id="r1",
        crash_at=parse_point("fetch#2@after_effect"),
    )

    assert crashed.status is ChildStatus.CRASHED, crashed.describe()
    assert crashed.returncode == -signal.SIGKILL
    # Not even a zombie is left: the pid names no process at all.
    with pytest.raises(ProcessLookupError):
        os.kill(crashed.pid, 0)
    resumed = await run_child(
        "workflows_for_kill:pipeline",
        dsn=_dsn(tmp_path),
        execution_id="r1",
        resume=True,
    )
    assert resumed.output() == "ITEM-0,ITEM-1,ITEM-2"


async def test_without_fork_a_child_is_a_fresh_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kill, "FORK_CHILDREN", False)

    found = await _whereabouts(tmp_path, "w2")

    assert found["ppid"] == os.getpid()


async def test_a_forked_child_sees_the_environment_of_its_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await _whereabouts(tmp_path, "w3")
    monkeypatch.setenv("WAYPOINT_TEST_MARKER", "set after the zygote started")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    after = await _whereabouts(tmp_path, "w4")

    assert before["marker"] is None
    assert after["marker"] == "set after the zygote started"
    assert after["cwd"] == str(workdir)


async def test_a_module_that_holds_a_file_open_is_not_forked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever a module opens on import, a fork would share with every child;
    # a database connection would be shared the same way.
    (tmp_path / "leaky_workflow.py").write_text(
        textwrap.dedent(
            """
            import os

            from waypoint import workflow

            HELD = open(__file__)


            @workflow
            async def parent() -> int:
                return os.getppid()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    outcome = await run_child(
        "leaky_workflow:parent", dsn=_dsn(tmp_path), execution_id="l1"
    )

    assert outcome.status is ChildStatus.COMPLETED, outcome.describe()
    assert outcome.output() == os.getpid()


async def test_a_module_changed_since_the_zygote_started_is_imported_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "changing_workflow.py"
    source = "from waypoint import workflow\n\n\n@workflow\nasync def v() -> int:\n"
    module.write_text(source + "    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = await run_child(
        "changing_workflow:v", dsn=_dsn(tmp_path), execution_id="c1"
    )

    module.write_text(source + "    return 2\n")
    second = await run_child(
        "changing_workflow:v", dsn=_dsn(tmp_path), execution_id="c2"
    )

    assert (first.output(), second.output()) == (1, 2)


_ORPHANING_PARENT = """
import asyncio, sys
from pytest_waypoint import kill


async def main():
    child = await kill.ChildProcess.start(
        "workflows_for_kill:pipeline", dsn=sys.argv[1], execution_id="o1", gate=True
    )
    await child.ready()
    (zygote,) = kill._zygotes.by_path.values()
    print(zygote.process.pid, child.pid, flush=True)
    sys.stdin.readline()


asyncio.run(main())
"""


@needs_fork
@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open")
def test_a_zygote_whose_parent_dies_exits_with_its_children(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHANING_PARENT, _dsn(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert parent.stdout is not None
    zygote_pid, child_pid = map(int, parent.stdout.readline().split())
    # Opened while both live, so the descriptors name these processes only.
    watched = [os.pidfd_open(zygote_pid), os.pidfd_open(child_pid)]
    try:
        parent.kill()
        parent.wait()
        parent.stdin.close()  # type: ignore[union-attr]
        parent.stdout.close()

        for fd in watched:
            # A pidfd is readable once its process has ended.
            readable, _, _ = select.select([fd], [], [], 30)
            assert readable == [fd]
    finally:
        for fd in watched:
            os.close(fd)


async def test_a_gated_forked_child_is_released_and_reaped(tmp_path: Path) -> None:
    child = await ChildProcess.start(
        "workflows_for_kill:pipeline",
        dsn=_dsn(tmp_path),
        execution_id="g1",
        gate=True,
    )
    await child.ready()
    child.go()

    outcome = await child.outcome()

    assert outcome.output() == "ITEM-0,ITEM-1,ITEM-2"
    assert outcome.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(outcome.pid, 0)
