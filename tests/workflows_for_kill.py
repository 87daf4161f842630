"""Workflows that the kill-mode and race tests run, often in child processes.

A child imports this module by name (``workflows_for_kill:pipeline``), so it
must import cleanly on its own. Steps record their side effects in the effect
ledger of the journal's own database: the store that ``use_ledger`` set, or
else the one ``WAYPOINT_DSN`` names, which is how a child finds it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from waypoint import Store, checkpoint, current_step, workflow
from waypoint.stores import open_store

_ledger: Store | None = None


def use_ledger(store: Store | None) -> None:
    """Record effects in ``store`` (None: the store ``WAYPOINT_DSN`` names)."""
    global _ledger
    _ledger = store


async def effect(detail: str) -> int:
    """Apply a side effect once more under the running step's key."""
    global _ledger
    if _ledger is None:
        _ledger = open_store()
    if not _ledger.is_open:
        await _ledger.open()
    step = current_step()
    return await _ledger.record_effect(
        step.idempotency_key, execution_id=step.execution_id, detail=detail
    )


@checkpoint
async def fetch(i: int) -> str:
    # Yield once, so that concurrent runners really interleave.
    await asyncio.sleep(0)
    await effect(f"fetch {i}")
    return f"item-{i}"


@checkpoint
async def publish(text: str) -> str:
    await effect("publish")
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
        out = Path(path)
        lines = out.read_text().splitlines() if out.exists() else []
        out.write_text("\n".join([*lines, *_buffer]) + "\n")
        _buffer.clear()
    return Path(path).read_text().split()


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
