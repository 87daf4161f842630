"""Journals written by earlier versions must still replay.

``golden/*.json`` holds the rows of real SQLite journals, written by the
version named in the file, of executions that crashed before completing.
Each test loads the rows into a fresh store of today's schema and resumes:
every step must come from the journal (argument hashes and JSON encodings
unchanged) and the output must be the one recorded alongside.

To add one after a format change: run this module as a script with
``--write VERSION`` and commit the file it prints.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest

from waypoint import SQLiteStore, Waypoint, checkpoint, workflow
from waypoint.hooks import CrashSite, SimulatedCrash, armed

GOLDEN = Path(__file__).with_name("golden")
TABLES = ("executions", "steps", "events")

ran: list[str] = []


class Quote(pydantic.BaseModel):
    supplier: str
    price: Decimal
    valid_until: dt.date


@checkpoint
async def ask_suppliers(item: str, count: int) -> list[Quote]:
    ran.append("ask_suppliers")
    return [
        Quote(
            supplier=f"s{n}", price=Decimal(f"{n}.25"), valid_until=dt.date(2027, 1, n)
        )
        for n in range(1, count + 1)
    ]


@checkpoint
async def choose(quotes: list[Quote], tags: set[str]) -> tuple[str, Decimal]:
    ran.append("choose")
    best = min(quotes, key=lambda q: q.price)
    return best.supplier, best.price


@workflow(name="golden_purchase")
async def purchase(item: str, count: int) -> dict[str, str]:
    quotes = await ask_suppliers(item, count)
    supplier, price = await choose(quotes, {"urgent", "eu", "cheap"})
    return {"item": item, "supplier": supplier, "price": str(price)}


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
async def test_an_old_journal_replays_without_running_a_step(
    tmp_path: Path, path: Path
) -> None:
    golden = _load(path)
    store = SQLiteStore(tmp_path / "j.db")
    await store.open()
    for table in TABLES:
        for row in golden["rows"][table]:
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            store._db.execute(
                f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values())
            )
    ran.clear()

    try:
        async with Waypoint(store) as wp:
            out = await wp.resume(golden["execution_id"])
    finally:
        await store.close()

    assert out == golden["output"]
    assert ran == []


async def _write(version: str) -> None:
    path = GOLDEN.parent / "golden-tmp.db"
    path.unlink(missing_ok=True)

    def crash(site: CrashSite) -> None:
        if site.step is None:
            raise SimulatedCrash(site)

    async with Waypoint(SQLiteStore(path)) as wp:
        with armed(crash), pytest.raises(SimulatedCrash):
            await wp.run(purchase, "valves", 3, execution_id="golden-1")
    output = await purchase("valves", 3)
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = {t: [dict(r) for r in conn.execute(f"SELECT * FROM {t}")] for t in TABLES}
    for table in ("executions", "events"):
        for row in rows[table]:
            row.pop("seq", None)
            if table == "executions":
                row["owner"] = row["lease_expires_at"] = None
    conn.close()
    path.unlink()
    document = {
        "written_by": version,
        "execution_id": "golden-1",
        "output": output,
        "rows": rows,
    }
    out = GOLDEN / f"purchase-{version}.json"
    out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"{out}\n")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_golden_journal.py --write VERSION")
    asyncio.run(_write(sys.argv[2]))
