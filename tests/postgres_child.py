"""A worker process for the PostgreSQL worker tests.

    python postgres_child.py MODE CONFIG_JSON

``start`` starts executions and hangs inside a step until it is killed;
``resume`` resumes one execution when a line arrives on stdin; ``recover`` calls
``recover()`` until no execution is left running. Each prints one JSON line
with what it did. Step bodies count their runs in the effect ledger, in the
journal's own database, so the count outlives the process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from waypoint import (
    ExecutionBusy,
    ExecutionStatus,
    Waypoint,
    checkpoint,
    current_step,
    workflow,
)
from waypoint.stores.postgres import PostgresStore

STORE: PostgresStore | None = None
BLOCK_AT: int | None = None
STEP_SECONDS = 0.0


@checkpoint
async def work(n: int) -> int:
    if n == BLOCK_AT:
        # The starter "crashes" here: it is SIGKILLed while waiting.
        await asyncio.Event().wait()
    if STEP_SECONDS:
        await asyncio.sleep(STEP_SECONDS)
    step = current_step()
    assert STORE is not None
    await STORE.record_effect(
        f"body:{step.execution_id}:{step.position}", execution_id=step.execution_id
    )
    return n * 10


@workflow(name="pg_pipeline")
async def pipeline(count: int) -> int:
    total = 0
    for n in range(count):
        total += await work(n)
    return total


def say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def start(wp: Waypoint, config: dict[str, Any]) -> None:
    for execution_id in config["ids"]:
        await wp.start(pipeline, config["count"], execution_id=execution_id)
    say(started=len(config["ids"]))
    await asyncio.Event().wait()


async def resume(wp: Waypoint, config: dict[str, Any]) -> None:
    say(ready=True)
    # Both racers wait for the parent's word, so that they start together.
    await asyncio.to_thread(sys.stdin.readline)
    try:
        output = await wp.resume(config["id"])
    except ExecutionBusy as exc:
        say(busy=exc.owner)
    else:
        say(output=output)


async def recover(wp: Waypoint, config: dict[str, Any]) -> None:
    recovered: list[str] = []
    deadline = time.monotonic() + config["seconds"]
    while time.monotonic() < deadline:
        recovered += await wp.recover(limit=config["limit"])
        running = [
            e async for e in wp.executions(status=ExecutionStatus.RUNNING, limit=1)
        ]
        if not running:
            break
        await asyncio.sleep(0.02)
    say(recovered=recovered)


async def main(mode: str, config: dict[str, Any]) -> None:
    global STORE, BLOCK_AT, STEP_SECONDS
    BLOCK_AT = config.get("block_at")
    STEP_SECONDS = config.get("step_seconds", 0.0)
    STORE = PostgresStore(config["dsn"], schema=config["schema"], max_size=4)
    async with STORE, Waypoint(STORE, lease_seconds=config["lease"]) as wp:
        await {"start": start, "resume": resume, "recover": recover}[mode](wp, config)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
