"""The pytest plugin: options, fixtures, the crash marker, the report.

Loaded through the ``pytest11`` entry point. Importing it imports no
database driver and starts nothing: the harness, the stores and the
PostgreSQL helpers are imported inside the fixtures that need them.

Settings (each a command-line option with an ini twin; the command line
wins): ``--waypoint-store`` memory|sqlite|postgres, ``--waypoint-dsn``,
``--waypoint-seed`` (a number, or ``last`` for the previous run's),
``--waypoint-max-scenarios``, ``--waypoint-max-crashes``, ``--waypoint-mode``
inprocess|kill, ``--waypoint-racers``, ``--waypoint-faults`` crash|crash,db
and ``--waypoint-schedule`` (explore only this schedule: how a failure is
reproduced).

Reproduction: the run's seed is in the report header and on every failure
and is kept in pytest's cache for ``--waypoint-seed=last``; each
pytest-xdist worker explores with a seed derived from it. Schedules that
failed are kept in the cache per test and tried first on the next run. With
the ``CI`` environment variable set, the derandomised Hypothesis profile
``waypoint-ci`` is loaded (or choose it with ``--hypothesis-profile``).
"""

from __future__ import annotations

import hashlib
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_waypoint.schedule import Schedule, parse_schedule
from pytest_waypoint.settings import (
    CI_PROFILE,
    DEFAULT_MAX_CRASHES,
    DEFAULT_MAX_SCENARIOS,
    DEFAULT_MODE,
    FAULTS,
    MODES,
    OPTIONS,
    SEED_CACHE,
    Settings,
    hypothesis_profile,
    read_settings,
)

if TYPE_CHECKING:
    from pytest_waypoint.effects import Effects
    from pytest_waypoint.harness import Chaos, ScheduledWaypoint
    from pytest_waypoint.llm import FakeLLM
    from waypoint.runtime import Waypoint
    from waypoint.stores.base import Store

__all__ = [
    "CI_PROFILE",
    "DEFAULT_MAX_CRASHES",
    "DEFAULT_MAX_SCENARIOS",
    "DEFAULT_MODE",
    "FAULTS",
    "MODES",
    "Settings",
]

MARKER = "waypoint_crash"

_asyncio_plugin: Any
try:
    import pytest_asyncio as _asyncio_plugin
except ImportError:  # waypoint-sdk installed without its testing extra
    _asyncio_plugin = None


def _async_fixture(fn: Callable[..., Any]) -> Any:
    """``pytest_asyncio.fixture``, or, without it, a fixture that says what to
    install: the plugin loads in every pytest run of an environment that has
    waypoint-sdk, and must not break the ones that never use it."""
    if _asyncio_plugin is not None:
        return _asyncio_plugin.fixture(fn)

    def missing() -> None:
        raise pytest.UsageError(
            f"the {fn.__name__} fixture needs pytest-asyncio: "
            "pip install 'waypoint-sdk[testing]'"
        )

    missing.__doc__ = fn.__doc__
    return pytest.fixture(name=fn.__name__)(missing)


#: Failing schedules are cached per test under this prefix; the smallest
#: ones are kept, enough to retry first.
_FAILING_CACHE = "waypoint/failing/"
_FAILING_KEPT = 20

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


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("waypoint", "Waypoint crash testing")
    for name, help_text, _ in OPTIONS:
        flag = "--waypoint-" + name.replace("_", "-")
        group.addoption(flag, dest=f"waypoint_{name}", default=None, help=help_text)
        parser.addini(f"waypoint_{name}", help_text + f" (overridden by {flag})")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # Before any plugin's pytest_configure, so that the profile exists when
    # Hypothesis' own plugin loads the one named by --hypothesis-profile.
    hypothesis_profile(config)


def pytest_configure(config: pytest.Config) -> None:
    # Not tryfirst: the cacheprovider's configure (which is) must have made
    # config.cache for --waypoint-seed=last.
    config.addinivalue_line(
        "markers",
        f"{MARKER}(schedule): run the test's workflows under a crash schedule, "
        "e.g. 'fetch#1@after_commit'; each crash is followed by a resume in a "
        "fresh runtime",
    )
    if hasattr(config, "workerinput"):
        # pytest-xdist workers skip pytest_cmdline_main.
        # TODO(xdist-profile): a worker whose Hypothesis plugin configures
        # before this one cannot load --hypothesis-profile=waypoint-ci; CI=1
        # works everywhere, as the profile is then loaded here.
        hypothesis_profile(config)
    settings = read_settings(config)
    config.stash[_settings_key] = settings
    cache = getattr(config, "cache", None)
    if cache is not None and not hasattr(config, "workerinput"):
        cache.set(SEED_CACHE, settings.seed)
    config.pluginmanager.register(_Summary(), "waypoint-summary")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: every worker derives its seed from the run's seed."""
    node.workerinput["waypoint_seed"] = node.config.stash[_settings_key].seed


# Reporting ---------------------------------------------------------------


def pytest_report_header(config: pytest.Config) -> str:
    header = config.stash[_settings_key].header()
    hypothesis = sys.modules.get("hypothesis")
    profile = hypothesis and hypothesis.settings.get_current_profile_name()
    if profile == CI_PROFILE:
        header += f", hypothesis-profile={CI_PROFILE}"
    return header


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    from pytest_waypoint.report import ChaosViolation

    if call.excinfo is not None and isinstance(call.excinfo.value, ChaosViolation):
        # The matrix says all there is to say; a traceback into the harness
        # would only bury it. Hypothesis adds its falsifying example as notes.
        notes = getattr(call.excinfo.value, "__notes__", [])
        report.longrepr = "\n".join([str(call.excinfo.value), *notes])
    if call.when == "teardown":
        stats = _item_stats(item)
        if any(stats.values()):
            report.user_properties.append(("waypoint", stats))
        _remember_failures(item)
    return report


def _failing_key(nodeid: str) -> str:
    return _FAILING_CACHE + hashlib.sha256(nodeid.encode()).hexdigest()[:16]


def _remember_failures(item: pytest.Item) -> None:
    """Keep the schedules that failed in this test for the next run.

    One cache key per test, so that pytest-xdist workers never write the
    same key. A test that explored and passed forgets its old failures.
    """
    cache = getattr(item.config, "cache", None)
    harnesses = [h for h in item.stash.get(_harness_key, []) if hasattr(h, "first")]
    if cache is None or not harnesses:
        return
    scenarios = [
        s
        for h in harnesses
        for s in [*h.scenarios, *(x for r in h.reports for x in r.scenarios)]
    ]
    if not scenarios:
        return
    failing = {s.schedule for s in scenarios if s.violations and s.schedule}
    kept = sorted(failing, key=lambda s: (len(s), str(s)))[:_FAILING_KEPT]
    cache.set(_failing_key(item.nodeid), [str(s) for s in kept])


def _remembered(request: pytest.FixtureRequest) -> list[Schedule]:
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return []
    from waypoint.errors import ConfigurationError

    found = []
    for text in cache.get(_failing_key(request.node.nodeid), []) or []:
        try:
            found.append(parse_schedule(text))
        except (ConfigurationError, AttributeError, TypeError):
            continue  # written by another version: not worth failing over
    return found


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


@_async_fixture
async def waypoint_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Store]:
    """A fresh, isolated, open store on the chosen backend for this test."""
    settings = request.config.stash[_settings_key]
    if settings.store == "postgres":
        from pytest_waypoint._postgres import isolated_store

        async with isolated_store(
            settings.dsn, testcontainers=settings.testcontainers
        ) as pg_store:
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


@_async_fixture
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

    settings = request.config.stash[_settings_key]
    driver = None
    if settings.mode == "kill":
        from pytest_waypoint.kill import KillDriver

        driver = KillDriver()
    scheduled = ScheduledWaypoint(
        waypoint_store, schedule, reproduce=_reproducer(request), driver=driver
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
        first=_remembered(request),
        reproduce=_reproducer(request),
        mode=settings.mode,
        racers=settings.racers,
        faults=settings.faults,
        seed_note=settings.seed_note,
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
        # No schedule: a database fault, which the test makes again as it is.
        option = "--waypoint-schedule=" + shlex.quote(str(schedule))
        option = option if schedule else ""
        return " ".join(w for w in ("pytest", shlex.quote(nodeid), option, extra) if w)

    return reproduce
