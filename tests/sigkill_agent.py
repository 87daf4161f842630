"""A workflow run in a child process that the test kills with SIGKILL.

Run as ``python sigkill_agent.py DB_PATH EFFECTS_PATH CRASH_POINT``: when the
run reaches CRASH_POINT the child prints ``reached`` and blocks on stdin
until the parent kills it. Each step body appends "name key" to
EFFECTS_PATH, so the parent can count how often each body ran and with
which idempotency key.
"""

from __future__ import annotations

import asyncio
import os
import sys

from waypoint import Waypoint, checkpoint, current_step, workflow
from waypoint.hooks import CrashSite, armed

EFFECTS = os.environ.get("SIGKILL_AGENT_EFFECTS", "effects.log")


def _effect(name: str) -> None:
    with open(EFFECTS, "a") as log:
        log.write(f"{name} {current_step().idempotency_key}\n")


@checkpoint
async def plan(topic: str) -> list[str]:
    _effect("plan")
    return [f"{topic}-a", f"{topic}-b"]


@checkpoint
async def send(item: str) -> str:
    _effect("send")
    return f"sent {item}"


@workflow
async def mailer(topic: str) -> list[str]:
    items = await plan(topic)
    return [await send(item) for item in items]


def _park_at(point: str) -> object:
    def hook(site: CrashSite) -> None:
        if site.point == point:
            sys.stdout.write("reached\n")
            sys.stdout.flush()
            sys.stdin.readline()  # blocks until SIGKILL arrives

    return hook


async def _main(db: str, point: str) -> None:
    async with Waypoint(f"sqlite:///{db}") as wp:
        with armed(_park_at(point)):  # type: ignore[arg-type]
            await wp.run(mailer, "news", execution_id="mail-1")


if __name__ == "__main__":
    EFFECTS = sys.argv[2]
    asyncio.run(_main(sys.argv[1], sys.argv[3]))
