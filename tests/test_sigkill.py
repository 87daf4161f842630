"""Real crashes: a child process killed with SIGKILL at a crash point.

No ``finally`` runs in the child, no lease is released, nothing is flushed:
the parent then resumes in a fresh runtime on the same SQLite file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sigkill_agent

from waypoint import EventKind, ExecutionStatus, Waypoint

AGENT = Path(__file__).with_name("sigkill_agent.py")

pytestmark = pytest.mark.slow


def _run_until_killed(db: Path, effects: Path, point: str) -> None:
    with subprocess.Popen(
        [sys.executable, str(AGENT), str(db), str(effects), point],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        # The child says when it stands at the point: no sleeps, no timing.
        assert child.stdout.readline().strip() == "reached"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL


def _effects(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    effects = tmp_path / "effects.log"
    monkeypatch.setattr(sigkill_agent, "EFFECTS", str(effects))
    return tmp_path / "journal.db", effects


async def test_killed_right_after_a_checkpoint_commits(
    files: tuple[Path, Path],
) -> None:
    db, effects = files
    _run_until_killed(db, effects, "send#1@after_commit")
    assert _effects(effects) == ["plan mail-1:0", "send mail-1:1"]

    async with Waypoint(f"sqlite:///{db}") as wp:
        out = await wp.resume("mail-1")
        execution = await wp.execution("mail-1")
        events = await wp.history("mail-1")

    assert out == ["sent news-a", "sent news-b"]
    assert execution.status is ExecutionStatus.COMPLETED
    # The committed send#1 never ran again; only send#2 is new.
    assert _effects(effects) == ["plan mail-1:0", "send mail-1:1", "send mail-1:2"]
    resumed = [e for e in events if e.kind is EventKind.EXECUTION_RESUMED]
    assert len(resumed) == 1
    assert resumed[0].payload["previous_owner"].split(":")[1] != str(os.getpid())


async def test_killed_right_before_a_checkpoint_commits(
    files: tuple[Path, Path],
) -> None:
    db, effects = files
    _run_until_killed(db, effects, "send#1@after_effect")
    assert _effects(effects) == ["plan mail-1:0", "send mail-1:1"]

    async with Waypoint(f"sqlite:///{db}") as wp:
        out = await wp.resume("mail-1")

    assert out == ["sent news-a", "sent news-b"]
    # send#1's effect happened but was not committed: it runs again, with
    # the same idempotency key, so the mail service can drop the duplicate.
    assert _effects(effects) == [
        "plan mail-1:0",
        "send mail-1:1",
        "send mail-1:1",
        "send mail-1:2",
    ]


async def test_recover_takes_over_a_killed_runners_execution(
    files: tuple[Path, Path],
) -> None:
    db, effects = files
    _run_until_killed(db, effects, "plan#1@after_commit")

    async with Waypoint(f"sqlite:///{db}") as wp:
        recovered = await wp.recover()
        execution = await wp.execution("mail-1")
        events = await wp.history("mail-1")

    assert recovered == ["mail-1"]
    # Taken over once: one resumed event, naming the dead owner.
    resumed = [e for e in events if e.kind is EventKind.EXECUTION_RESUMED]
    assert len(resumed) == 1
    assert resumed[0].payload["previous_owner"] is not None
    assert execution.status is ExecutionStatus.COMPLETED
    assert _effects(effects).count("plan mail-1:0") == 1
