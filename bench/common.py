"""What every benchmark section returns: named figures, printed as a table."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    section: str
    label: str
    value: float
    unit: str
    note: str = ""

    def line(self) -> str:
        value = f"{self.value:,.3f}" if self.value < 100 else f"{self.value:,.0f}"
        note = f"  {self.note}" if self.note else ""
        return f"  {self.label:<58} {value:>12} {self.unit:<10}{note}"


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    """Seconds one awaited call takes, by the monotonic performance clock."""
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start
