"""The pytest plugin: options, fixtures, the crash marker, the report.

Loaded through the ``pytest11`` entry point. Importing it imports no
database driver and starts nothing: the harness, the stores and the
PostgreSQL helpers are imported inside the fixtures that need them.

Settings (each a command-line option with an ini twin; the command line
wins): ``--waypoint-store`` memory|sqlite|postgres, ``--waypoint-dsn``,
``--waypoint-seed``, ``--waypoint-max-scenarios``, ``--waypoint-max-crashes``
and ``--waypoint-schedule`` (explore only this schedule: how a failure is
reproduced).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from pytest_waypoint.schedule import Schedule, parse_schedule

if TYPE_CHECKING:
    from pytest_waypoint.effects import Effects
    from pytest_waypoint.harness import Chaos, ScheduledWaypoint
    from pytest_waypoint.llm import FakeLLM
    from waypoint.runtime import Waypoint
    from waypoint.stores.base import Store

__all__ = ["Settings"]

STORES = ("memory", "sqlite", "postgres")
DEFAULT_STORE = "sqlite"
MARKER = "waypoint_crash"

# The harness's defaults, repeated so that loading the plugin does not
# import the harness (a test asserts the two agree).
DEFAULT_MAX_SCENARIOS = 500
DEFAULT_MAX_CRASHES = 1

# Seeds are 32 bits so that they are short enough to type back in.
_SEED_BITS = 32


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective settings of the session, after options and ini."""

    store: str = DEFAULT_STORE
    dsn: str | None = None
    seed: int = 0
    max_scenarios: int = DEFAULT_MAX_SCENARIOS
    max_crashes: int = DEFAULT_MAX_CRASHES
    schedule: Schedule | None = None
    explicit: frozenset[str] = field(default_factory=frozenset)

    def header(self) -> str:
        where = {
            "memory": "an in-memory store per test",
            "sqlite": "a temporary SQLite file per test",
            "postgres": "a PostgreSQL schema per test at "
            + _redact(self.dsn or "WAYPOINT_TEST_DSN or 127.0.0.1:5432"),
        }[self.store]
        line = (
            f"waypoint: store={self.store} ({where}), seed={self.seed}, "
            f"max-scenarios={self.max_scenarios}, max-crashes={self.max_crashes}"
        )
        if self.schedule is not None:
            line += f", schedule={self.schedule}"
        return line

    def options(self) -> list[str]:
        """The options a reproduction line must repeat."""
        shown = []
        if "store" in self.explicit:
            shown.append(f"--waypoint-store={self.store}")
        if self.dsn is not None:
            shown.append(f"--waypoint-dsn={shlex.quote(self.dsn)}")
        return shown


_settings_key = pytest.StashKey[Settings]()
_harness_key = pytest.StashKey[list[Any]]()


@dataclass(slots=True)
class _Stats:
    workflows: int = 0
    scenarios: int = 0
    violations: int = 0
    llm_calls: int = 0
    llm_tokens: int = 0

    def add(self, values: dict[str, int]) -> None:
        self.workflows += values.get("workflows", 0)
        self.scenarios += values.get("scenarios", 0)
        self.violations += values.get("violations", 0)
        self.llm_calls += values.get("llm_calls", 0)
        self.llm_tokens += values.get("llm_tokens", 0)


# Options ---------------------------------------------------------------

_OPTIONS: list[tuple[str, str, str]] = [
    ("store", "the journal store of each test: memory, sqlite or postgres", ""),
    ("dsn", "the PostgreSQL server URL (implies --waypoint-store=postgres)", ""),
    ("seed", "the seed of sampled explorations (default: random, shown)", ""),
    ("max_scenarios", "the most crash scenarios per explored workflow", ""),
    ("max_crashes", "the most crashes per schedule (2 adds crash pairs)", ""),
    ("schedule", "explore only this crash schedule, e.g. 'fetch#1@after_effect'", ""),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("waypoint", "Waypoint crash testing")
    for name, help_text, _ in _OPTIONS:
        flag = "--waypoint-" + name.replace("_", "-")
        group.addoption(flag, dest=f"waypoint_{name}", default=None, help=help_text)
        parser.addini(f"waypoint_{name}", help_text + f" (overridden by {flag})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(schedule): run the test's workflows under a crash schedule, "
        "e.g. 'fetch#1@after_commit'; each crash is followed by a resume in a "
        "fresh runtime",
    )
    config.stash[_settings_key] = _settings(config)
    config.pluginmanager.register(_Summary(), "waypoint-summary")


def _raw(config: pytest.Config, name: str) -> tuple[str | None, str]:
    flag = "--waypoint-" + name.replace("_", "-")
    value = config.getoption(f"waypoint_{name}")
    if value is not None:
        return str(value), flag
    ini = config.getini(f"waypoint_{name}")
    return (str(ini).strip() or None), f"ini option waypoint_{name}"


def _settings(config: pytest.Config) -> Settings:
    explicit = set()
    values: dict[str, Any] = {}
    for name, _, _ in _OPTIONS:
        raw, source = _raw(config, name)
        if raw is None:
            continue
        explicit.add(name)
        values[name] = _PARSERS[name](raw, source)
    store = values.get("store")
    dsn = values.get("dsn")
    if dsn is not None and store in ("memory", "sqlite"):
        raise pytest.UsageError(
            f"a PostgreSQL URL was given but the store is {store!r}: drop "
            "--waypoint-dsn, or use --waypoint-store=postgres"
        )
    if store is None:
        store = "postgres" if dsn is not None else DEFAULT_STORE
    seed = values.get("seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(_SEED_BITS // 8), "big")
    return Settings(
        store=store,
        dsn=dsn,
        seed=seed,
        max_scenarios=values.get("max_scenarios", DEFAULT_MAX_SCENARIOS),
        max_crashes=values.get("max_crashes", DEFAULT_MAX_CRASHES),
        schedule=values.get("schedule"),
        explicit=frozenset(explicit),
    )


def _parse_store(raw: str, source: str) -> str:
    if raw not in STORES:
        raise pytest.UsageError(
            f"{source}: unknown store {raw!r}; choose one of {', '.join(STORES)}"
        )
    return raw


def _parse_dsn(raw: str, source: str) -> str:
    if not raw.startswith(("postgresql://", "postgres://")):
        raise pytest.UsageError(
            f"{source}: {_redact(raw)!r} is not a PostgreSQL URL; write "
            "postgresql://user:password@host:5432/database"
        )
    return raw


def _parse_seed(raw: str, source: str) -> int:
    # TODO(seed-last): issue 5's "--waypoint-seed=last" reads the cache here.
    if not raw.isdigit() or int(raw) >= 2**_SEED_BITS:
        raise pytest.UsageError(
            f"{source}: bad seed {raw!r}; give a whole number from 0 to "
            f"{2**_SEED_BITS - 1}, or leave it out for a random one"
        )
    return int(raw)


def _positive(what: str) -> Callable[[str, str], int]:
    def parse(raw: str, source: str) -> int:
        if not raw.isdigit() or int(raw) < 1:
            raise pytest.UsageError(
                f"{source}: bad {what} {raw!r}; give a whole number >= 1"
            )
        return int(raw)

    return parse


def _parse_schedule(raw: str, source: str) -> Schedule:
    from waypoint.errors import ConfigurationError

    try:
        return parse_schedule(raw)
    except ConfigurationError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "store": _parse_store,
    "dsn": _parse_dsn,
    "seed": _parse_seed,
    "max_scenarios": _positive("maximum number of scenarios"),
    "max_crashes": _positive("maximum number of crashes"),
    "schedule": _parse_schedule,
}


def _redact(dsn: str) -> str:
    from waypoint.stores import redact

    return redact(dsn)


# Reporting ---------------------------------------------------------------


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[_settings_key].header()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    from pytest_waypoint.report import ChaosViolation

    if call.excinfo is not None and isinstance(call.excinfo.value, ChaosViolation):
        # The matrix says all there is to say; a traceback into the harness
        # would only bury it.
        report.longrepr = str(call.excinfo.value)
    if call.when == "teardown":
        stats = _item_stats(item)
        if any(stats.values()):
            report.user_properties.append(("waypoint", stats))
    return report


def _item_stats(item: pytest.Item) -> dict[str, int]:
    stats = {"workflows": 0, "scenarios": 0, "violations": 0}
    stats |= {"llm_calls": 0, "llm_tokens": 0}
    for harness in item.stash.get(_harness_key, []):
        for report in getattr(harness, "reports", []):
            stats["workflows"] += 1
            stats["scenarios"] += len(report.scenarios)
            stats["violations"] += len(report.violations)
            stats["llm_calls"] += report.llm_saved.calls
            stats["llm_tokens"] += report.llm_saved.tokens
        for scenario in getattr(harness, "scenarios", []):
            stats["scenarios"] += 1
            stats["violations"] += len(scenario.violations)
    return stats


class _Summary:
    """Totals for the terminal summary, one per session.

    Counted from the teardown reports rather than the items, so that the
    totals also reach the controller of a pytest-xdist run.
    """

    def __init__(self) -> None:
        self.stats = _Stats()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for name, value in report.user_properties:
            if name == "waypoint" and isinstance(value, dict):
                self.stats.add(value)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        stats = self.stats
        if not stats.workflows and not stats.scenarios:
            return
        terminalreporter.write_line(
            f"waypoint: {stats.workflows} workflows explored, {stats.scenarios} "
            f"scenarios run, {stats.violations} violations, {stats.llm_calls} "
            f"LLM calls ({stats.llm_tokens} tokens) saved by the journal",
        )


# Fixtures --------------------------------------------------------------


def _schedule_for(request: pytest.FixtureRequest) -> Schedule | None:
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return request.config.stash[_settings_key].schedule
    from waypoint.errors import ConfigurationError

    if not marker.args or not all(isinstance(a, str) for a in marker.args):
        pytest.fail(
            f"@pytest.mark.{MARKER} needs a schedule such as "
            f"'fetch#1@after_commit', not {marker.args!r}",
            pytrace=False,
        )
    try:
        return parse_schedule(",".join(marker.args))
    except ConfigurationError as exc:
        pytest.fail(f"@pytest.mark.{MARKER}: {exc}", pytrace=False)


@pytest_asyncio.fixture
async def waypoint_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    """A fresh, isolated, open store on the chosen backend for this test."""
    settings = request.config.stash[_settings_key]
    if settings.store == "postgres":
        from pytest_waypoint._postgres import isolated_store

        async with isolated_store(settings.dsn) as pg_store:
            yield pg_store
        return
    from waypoint.stores.memory import MemoryStore
    from waypoint.stores.sqlite import SQLiteStore

    store: Store = (
        MemoryStore()
        if settings.store == "memory"
        else SQLiteStore(tmp_path / "waypoint.db")
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture
async def waypoint(
    request: pytest.FixtureRequest, waypoint_store: Store
) -> AsyncIterator[Waypoint]:
    """A runtime on ``waypoint_store``. Under ``@pytest.mark.waypoint_crash``
    (or ``--waypoint-schedule``) its ``run`` plays the crash schedule:
    the run crashes at each point and is resumed in a fresh runtime."""
    from waypoint.runtime import Waypoint

    schedule = _schedule_for(request)
    if schedule is None:
        async with Waypoint(waypoint_store) as runtime:
            yield runtime
        return
    from pytest_waypoint.harness import ScheduledWaypoint

    scheduled = ScheduledWaypoint(
        waypoint_store, schedule, reproduce=_reproducer(request)
    )
    request.node.stash.setdefault(_harness_key, []).append(scheduled)
    async with scheduled:
        yield scheduled
    _check_fired(scheduled)


def _check_fired(scheduled: ScheduledWaypoint) -> None:
    unfired = scheduled.never_fired()
    if unfired is None:
        return
    pytest.fail(unfired, pytrace=False)


@pytest.fixture
def chaos(request: pytest.FixtureRequest, waypoint_store: Store) -> Chaos:
    """The chaos harness on this test's store: ``await chaos.explore(wf)``."""
    from pytest_waypoint.harness import Chaos

    settings = request.config.stash[_settings_key]
    schedule = _schedule_for(request)
    harness = Chaos(
        waypoint_store,
        seed=settings.seed,
        max_scenarios=settings.max_scenarios,
        max_crashes=settings.max_crashes,
        schedules=[] if schedule is None else [schedule],
        reproduce=_reproducer(request),
    )
    request.node.stash.setdefault(_harness_key, []).append(harness)
    return harness


@pytest.fixture
def effects(waypoint_store: Store) -> Effects:
    """The side-effect ledger, kept in the test's store."""
    from pytest_waypoint.effects import Effects

    return Effects(waypoint_store)


@pytest.fixture
def fake_llm() -> FakeLLM:
    """A scripted model that counts calls and tokens: ``await
    fake_llm.complete(prompt)``; ``fake_llm.script({...})`` sets replies."""
    from pytest_waypoint.llm import FakeLLM

    return FakeLLM()


def _reproducer(request: pytest.FixtureRequest) -> Callable[[Schedule], str]:
    settings = request.config.stash[_settings_key]
    nodeid = request.node.nodeid
    extra = " ".join(settings.options())

    def reproduce(schedule: Schedule) -> str:
        option = "--waypoint-schedule=" + shlex.quote(str(schedule))
        return f"pytest {shlex.quote(nodeid)} {option} {extra}".rstrip()

    return reproduce
