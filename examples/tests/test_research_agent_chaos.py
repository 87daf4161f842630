"""The plugin's fixtures on the LLM research agent.

The agent's model is swapped for the ``fake_llm`` fixture, with a shorter
plan, so the test can count its calls. Its outbox is the effect ledger, which
drops a repeated idempotency key, so every execution publishes exactly once
however often it crashed.
"""

from __future__ import annotations

import json

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
def scripted(monkeypatch: pytest.MonkeyPatch, fake_llm):
    monkeypatch.setattr(agent, "llm", fake_llm.script(_reply))
    return fake_llm


async def test_the_agent_survives_every_crash(chaos, scripted, effects):
    report = await chaos.explore(agent.research_agent, "heat pumps")

    assert report.ok
    # plan, 2 x (search, summarize), write_report, publish: 7 steps.
    assert len(report.scenarios) == 7 * 3 + 1
    assert report.llm_saved.calls > 0
    assert report.llm_saved.tokens > 0
    # One publish per execution (the reference run and each scenario), though
    # the crashes after publish's body made it send the request again.
    assert (await effects.counts())["publish report"] == 1 + len(report.scenarios)
    assert (await effects.sends())["publish report"] == 2 + len(report.scenarios)


@pytest.mark.waypoint_crash("summarize#2@after_commit")
async def test_a_resume_does_not_pay_for_the_llm_twice(waypoint, scripted):
    report = await waypoint.run(agent.research_agent, "heat pumps")

    assert report.body.startswith("REPORT")
    # 1 plan + 2 summaries + 1 report; none of them asked twice.
    assert scripted.calls == 4
