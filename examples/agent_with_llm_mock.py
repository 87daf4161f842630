"""A research agent that survives SIGKILL without paying for its LLM twice.

    python -m examples.agent_with_llm_mock

The agent plans sub-questions with an LLM, searches for each, summarises each
with the LLM, writes a report with the LLM and publishes it (a side effect).
The LLM here is a scripted stand-in (no network, no key) that counts calls and
tokens as a real one would bill them.

The demo starts the run in a child process and kills it with SIGKILL once
the second summary is committed, then resumes in this process from the same
SQLite journal and prints which steps came from the journal, which ran, and
how many LLM calls the journal saved.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pydantic

from pytest_waypoint import effects
from pytest_waypoint.llm import FakeLLM
from waypoint import EventKind, Waypoint, checkpoint, current_step, workflow
from waypoint.hooks import CrashSite, armed

#: Where the child is killed: after the 2nd summary's checkpoint commits.
CRASH_POINT = "summarize#2@after_commit"


def _scripted_reply(prompt: str) -> str:
    """What the stand-in model answers: canned, but shaped like the real task."""
    if prompt.startswith("PLAN"):
        topic = prompt.removeprefix("PLAN ")
        return json.dumps([f"{topic}: history", f"{topic}: costs", f"{topic}: risks"])
    if prompt.startswith("SUMMARISE"):
        return f"summary of {prompt.split(' ', 1)[1][:40]}"
    return "REPORT\n" + prompt.split("\n", 1)[1]


#: A stand-in for a chat model (no network, no key) that counts calls and
#: tokens as a real one would bill them; the chaos harness reads its counts.
llm = FakeLLM(_scripted_reply, model="scripted-research-model")
ran: list[str] = []


class Source(pydantic.BaseModel):
    url: str
    snippet: str


class Report(pydantic.BaseModel):
    question: str
    body: str
    published_as: str = ""


def _mark() -> None:
    ran.append(current_step().name)


@checkpoint
async def plan(question: str) -> list[str]:
    _mark()
    return list(json.loads(await llm.complete(f"PLAN {question}")))


@checkpoint(retries=2, backoff=0.05)
async def search(query: str) -> list[Source]:
    _mark()
    slug = query.replace(" ", "-").replace(":", "")
    return [
        Source(url=f"https://search.example/{slug}/{n}", snippet=query) for n in (1, 2)
    ]


@checkpoint
async def summarize(query: str, sources: list[Source]) -> str:
    _mark()
    return await llm.complete(f"SUMMARISE {query} from {len(sources)} sources")


@checkpoint
async def write_report(question: str, notes: list[str]) -> Report:
    _mark()
    body = await llm.complete("WRITE\n" + "\n".join(notes))
    return Report(question=question, body=body)


@checkpoint
async def publish(report: Report) -> str:
    """The side effect, through an outbox that drops a repeated key.

    The outbox is the effect ledger in the journal's own database: like a
    real publishing API that honours idempotency keys, it applies a request
    once per key, so a publish that re-runs after a crash is dropped.
    """
    _mark()
    key = current_step().idempotency_key
    await effects.apply("publish report", report.question, key=key)
    return key


@workflow
async def research_agent(question: str) -> Report:
    queries = await plan(question)
    notes = []
    for query in queries:
        sources = await search(query)
        notes.append(await summarize(query, sources))
    report = await write_report(question, notes)
    report.published_as = await publish(report)
    return report


# The demo ------------------------------------------------------------------


def _child(dsn: str, execution_id: str, question: str) -> None:
    """Run the agent and park at CRASH_POINT until the parent kills us."""

    def park(site: CrashSite) -> None:
        if site.point == CRASH_POINT:
            print(
                json.dumps({"llm_calls": llm.calls, "tokens": llm.tokens}), flush=True
            )
            sys.stdin.readline()  # never returns: SIGKILL arrives first

    async def go() -> None:
        async with Waypoint(dsn) as wp:
            with armed(park):
                await wp.run(research_agent, question, execution_id=execution_id)

    asyncio.run(go())


def _start_and_kill(dsn: str, execution_id: str, question: str) -> dict[str, int]:
    """Run the agent in a child process; SIGKILL it at CRASH_POINT."""
    command = [sys.executable, "-m", "examples.agent_with_llm_mock", "--child"]
    with subprocess.Popen(
        [*command, dsn, execution_id, question],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        spent: dict[str, int] = json.loads(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    print(
        f"2. killed pid {child.pid} with SIGKILL at {CRASH_POINT}, after "
        f"{spent['llm_calls']} LLM calls ({spent['tokens']} tokens)"
    )
    return spent


async def demo(workdir: Path) -> None:
    dsn = f"sqlite:///{workdir / 'research.db'}"
    question = "heat pumps in old houses"
    execution_id = "research-1"

    print(f"1. starting the agent in a child process (journal: {dsn})")
    spent = _start_and_kill(dsn, execution_id, question)

    async with Waypoint(dsn) as wp:
        recorded = [
            e.step
            for e in await wp.history(execution_id)
            if e.kind is EventKind.STEP_COMPLETED
        ]
        print(f"3. resuming {execution_id} in a fresh runtime in this process")
        report = await wp.resume(execution_id)
        outbox = effects.Effects(wp.store)
        published = (await outbox.counts(execution_id)).get("publish report", 0)
        requests = (await outbox.sends(execution_id)).get("publish report", 0)

    replayed = ", ".join(map(str, recorded))
    print(f"   replayed from the journal ({len(recorded)}): {replayed}")
    print(f"   ran now ({len(ran)}): {', '.join(ran)}")
    print(
        f"   LLM calls now: {llm.calls}; saved by the journal: {spent['llm_calls']} "
        f"calls, {spent['tokens']} tokens"
    )
    print(
        f"   published {published} time(s) as {report.published_as} "
        f"({requests} request(s) made)"
    )
    print(f"4. report: {report.body.splitlines()[1]} ...")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:5])
        return
    with tempfile.TemporaryDirectory(prefix="waypoint-demo-") as workdir:
        asyncio.run(demo(Path(workdir)))


if __name__ == "__main__":
    main()
