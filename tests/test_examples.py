"""The runnable examples do what their docstrings promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run_example(name: str, cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("WAYPOINT_DSN", None)
    done = subprocess.run(
        [sys.executable, "-m", f"examples.{name}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_simple_agent_runs_once_then_answers_from_the_journal(tmp_path: Path) -> None:
    first = _run_example("simple_agent", tmp_path)
    second = _run_example("simple_agent", tmp_path)

    assert "order A-17: 2.30 EUR, confirmed" in first
    assert "steps that ran: ['fetch_order', 'price', 'confirm']" in first
    assert (tmp_path / "waypoint.db").exists()
    assert "order A-17: 2.30 EUR, confirmed" in second
    assert "steps that ran: none" in second


def test_the_llm_agent_survives_sigkill_and_saves_its_llm_calls(
    tmp_path: Path,
) -> None:
    out = _run_example("agent_with_llm_mock", tmp_path)

    assert "killed pid" in out
    assert "with SIGKILL at summarize#2@after_commit, after 3 LLM calls" in out
    assert (
        "replayed from the journal (5): plan, search, summarize, search, summarize"
        in out
    )
    assert "ran now (4): search, summarize, write_report, publish" in out
    assert "LLM calls now: 2; saved by the journal: 3 calls" in out
    assert "published 1 time(s) as research-1:8 (1 request(s) made)" in out
