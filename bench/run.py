"""Run every benchmark section in one process and print one table.

    python -m bench.run [SECTION ...]      (make bench)

Sections: core (memory and SQLite), chaos (crash exploration), kill (SIGKILL
mode), postgres (PostgresStore, its asyncpg floor, and DBOS Transact when
installed from bench/requirements.txt). Figures are ratios against floors
measured in the same run; nothing here is a pass/fail test.
"""

from __future__ import annotations

import asyncio
import importlib
import platform
import sys
import time

SECTIONS = ("core", "chaos", "kill", "postgres")


async def _run(names: list[str]) -> int:
    print(
        f"Waypoint benchmarks - Python {platform.python_version()} on "
        f"{platform.machine()}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    failed = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n[{name}]")
        started = time.perf_counter()
        try:
            figures = await module.measure()
        except Exception as exc:  # one section failing must not hide the rest
            print(f"  section failed: {type(exc).__name__}: {exc}")
            failed += 1
            continue
        for figure in figures:
            print(figure.line())
        print(f"  ({time.perf_counter() - started:.1f} s)")
    return 1 if failed else 0


def main() -> None:
    names = sys.argv[1:] or list(SECTIONS)
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        sys.exit(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    sys.exit(asyncio.run(_run(names)))


if __name__ == "__main__":
    main()
