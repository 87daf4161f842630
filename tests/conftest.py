"""Fixtures for the project's own tests.

``store`` is parametrised over every backend, so a test that takes it is part
of the store contract: memory, a real SQLite file, and a real PostgreSQL
schema of its own (skipped, with a reason, when no server answers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from waypoint import MemoryStore, SQLiteStore, Store

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


async def _make_store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    if kind == "postgres":
        from pytest_waypoint._postgres import isolated_store

        async with isolated_store() as store:
            yield store
        return
    store: Store = (
        MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "journal.db")
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for opened in _make_store(request.param, tmp_path):
        yield opened


@pytest.fixture(params=["memory", "sqlite"])
async def local_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    """The backends that need no server, for runtime behaviour tests."""
    async for opened in _make_store(request.param, tmp_path):
        yield opened


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    """The backends with a database that other processes can open too."""
    async for opened in _make_store(request.param, tmp_path):
        yield opened
