"""The smallest Waypoint workflow: three steps, no LLM.

    python -m examples.simple_agent

Runs on the embedded default (a SQLite file, ``waypoint.db``, in the working
directory, or ``WAYPOINT_DSN``). Running it again with the same execution id
returns the recorded output without running any step.
"""

from __future__ import annotations

import asyncio
import sys

from waypoint import Waypoint, checkpoint, workflow

ran: list[str] = []


@checkpoint
async def fetch_order(order_id: str) -> dict[str, int]:
    ran.append("fetch_order")
    return {"apples": 3, "pears": 2}


@checkpoint
async def price(items: dict[str, int]) -> int:
    ran.append("price")
    unit = {"apples": 40, "pears": 55}
    return sum(unit[name] * count for name, count in items.items())


@checkpoint
async def confirm(order_id: str, cents: int) -> str:
    ran.append("confirm")
    return f"order {order_id}: {cents / 100:.2f} EUR, confirmed"


@workflow
async def order_flow(order_id: str) -> str:
    items = await fetch_order(order_id)
    cents = await price(items)
    return await confirm(order_id, cents)


async def main(execution_id: str) -> None:
    async with Waypoint() as wp:
        print(f"journal: {wp.store.dsn}")
        print(await wp.run(order_flow, "A-17", execution_id=execution_id))
        print(f"steps that ran: {ran or 'none (the output came from the journal)'}")
        for event in await wp.history(execution_id):
            print(f"  {event.describe()}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "order-A-17"))
