"""Workflows that the kill-mode and race tests run, often in child processes.

A child imports this module by name (``workflows_for_kill:pipeline``), so it
must import cleanly on its own. Steps record their side effects in the effect
ledger, which lives in the journal's own database and so outlives the child.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pytest_waypoint.effects import apply
from waypoint import checkpoint, workflow


@checkpoint
async def fetch(i: int) -> str:
    # Yield once, so that concurrent runners really interleave.
    await asyncio.sleep(0)
    await apply("fetch", str(i))
    return f"item-{i}"


@checkpoint
async def publish(text: str) -> str:
    await apply("publish")
    return text.upper()


@workflow
async def pipeline(n: int = 3) -> str:
    items = [await fetch(i) for i in range(n)]
    return await publish(",".join(items))


# A workflow that is only correct if its ``finally`` block runs: collected
# items are buffered in process memory and written out on the way out.
_buffer: list[str] = []


@checkpoint
async def collect(item: str) -> str:
    _buffer.append(item)
    return item


@workflow
async def buffered(items: list[str], path: str) -> list[str]:
    try:
        for item in items:
            await collect(item)
    finally:
        _flush(Path(path))
    return Path(path).read_text().split()  # noqa: ASYNC240 - a tiny local file


def _flush(out: Path) -> None:
    with out.open("a") as f:
        f.writelines(f"{item}\n" for item in _buffer)
    _buffer.clear()


@checkpoint
async def count_step(i: int) -> int:
    return i


@workflow
async def twenty(n: int = 20) -> int:
    """Twenty trivial steps: the benchmark's workflow."""
    total = 0
    for i in range(n):
        total += await count_step(i)
    return total


@checkpoint
async def wait_forever() -> None:
    await asyncio.Event().wait()


@workflow
async def hangs() -> None:
    """Never ends: the kill-mode timeout must end it."""
    await wait_forever()
