"""The plugin's fixtures on the LLM research agent.

The agent's own scripted model is swapped for ``fake_llm``, which counts
calls per execution, so the report can say how many LLM calls the journal
served instead of the model. Its outbox drops a repeated idempotency key, so
every execution publishes exactly once however often it crashed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples import agent_with_llm_mock as agent


def _reply(prompt: str) -> str:
    if prompt.startswith("PLAN"):
        topic = prompt.removeprefix("PLAN ")
        return json.dumps([f"{topic}: history", f"{topic}: costs"])
    if prompt.startswith("SUMMARISE"):
        return f"summary of {prompt.split(' ', 1)[1][:40]}"
    return "REPORT\n" + prompt.split("\n", 1)[1]


@pytest.fixture
def outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_llm) -> Path:
    path = tmp_path / "outbox.jsonl"
    monkeypatch.setenv("RESEARCH_OUTBOX", str(path))
    monkeypatch.setattr(agent, "llm", fake_llm.script(_reply))
    return path


async def test_the_agent_survives_every_crash(chaos, fake_llm, outbox):
    report = await chaos.explore(agent.research_agent, "heat pumps")

    assert report.ok
    # plan, 2 x (search, summarize), write_report, publish: 7 steps.
    assert len(report.scenarios) == 7 * 3 + 1
    assert report.llm_saved.calls > 0
    assert report.llm_saved.tokens > 0
    published = [json.loads(line)["key"] for line in outbox.read_text().splitlines()]
    assert len(published) == len(set(published)) == 1 + len(report.scenarios)


@pytest.mark.waypoint_crash("summarize#2@after_commit")
async def test_a_resume_does_not_pay_for_the_llm_twice(waypoint, fake_llm, outbox):
    report = await waypoint.run(agent.research_agent, "heat pumps")

    assert report.body.startswith("REPORT")
    # 1 plan + 2 summaries + 1 report; none of them asked twice.
    assert fake_llm.calls == 4
