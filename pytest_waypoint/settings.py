"""The plugin's settings: options with ini twins, read and checked once.

Kept apart from ``plugin.py`` so that the hooks and fixtures read as
pytest's lifecycle. Import-light like the plugin: nothing here imports the
harness, a store or a database driver.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_waypoint.schedule import Schedule, parse_schedule

__all__ = ["CI_PROFILE", "OPTIONS", "Settings", "hypothesis_profile", "read_settings"]

STORES = ("memory", "sqlite", "postgres")
DEFAULT_STORE = "sqlite"

# The harness's defaults and choices, repeated so that loading the plugin
# does not import the harness (a test asserts the two agree).
DEFAULT_MAX_SCENARIOS = 500
DEFAULT_MAX_CRASHES = 1
MODES = ("inprocess", "kill")
DEFAULT_MODE = "inprocess"
FAULTS = ("crash", "db")

#: The Hypothesis profile registered for CI: the same examples on every run.
CI_PROFILE = "waypoint-ci"

#: The cache key of the last run's seed, for --waypoint-seed=last.
SEED_CACHE = "waypoint/seed"

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
    mode: str = DEFAULT_MODE
    racers: int = 0
    faults: tuple[str, ...] = ("crash",)
    testcontainers: bool = False
    explicit: frozenset[str] = field(default_factory=frozenset)
    #: How this process came by its seed, for failure reports.
    seed_note: str = ""

    def header(self) -> str:
        where = {
            "memory": "an in-memory store per test",
            "sqlite": "a temporary SQLite file per test",
            "postgres": "a PostgreSQL schema per test at "
            + _redact(self.dsn or "WAYPOINT_TEST_DSN or 127.0.0.1:5432")
            + (", else in a testcontainers server" if self.testcontainers else ""),
        }[self.store]
        line = (
            f"waypoint: store={self.store} ({where}), seed={self.seed}, "
            f"max-scenarios={self.max_scenarios}, max-crashes={self.max_crashes}, "
            f"mode={self.mode}"
        )
        if self.racers:
            line += f", racers={self.racers}"
        if self.faults != ("crash",):
            line += f", faults={','.join(self.faults)}"
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
        if self.mode != DEFAULT_MODE:
            shown.append(f"--waypoint-mode={self.mode}")
        if self.racers:
            shown.append(f"--waypoint-racers={self.racers}")
        if self.faults != ("crash",):
            shown.append(f"--waypoint-faults={','.join(self.faults)}")
        return shown


OPTIONS: list[tuple[str, str, str]] = [
    ("store", "the journal store of each test: memory, sqlite or postgres", ""),
    ("dsn", "the PostgreSQL server URL (implies --waypoint-store=postgres)", ""),
    ("seed", "the seed of sampled explorations (default: random, shown; last)", ""),
    ("max_scenarios", "the most crash scenarios per explored workflow", ""),
    ("max_crashes", "the most crashes per schedule (2 adds crash pairs)", ""),
    ("schedule", "explore only this crash schedule, e.g. 'fetch#1@after_effect'", ""),
    ("mode", "how to crash: inprocess (an exception) or kill (SIGKILL a child)", ""),
    ("racers", "after each single crash, race this many resumers (0: none)", ""),
    ("faults", "faults to inject: crash, or crash,db (cut PostgreSQL writes)", ""),
    (
        "testcontainers",
        "true: when no PostgreSQL server answers, start one in Docker with "
        "testcontainers (implies --waypoint-store=postgres)",
        "",
    ),
]


def hypothesis_profile(config: pytest.Config) -> None:
    chosen = config.getoption("hypothesis_profile", None)
    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    if chosen != CI_PROFILE and not in_ci:
        return
    try:
        from hypothesis import HealthCheck
        from hypothesis import settings as profiles
    except ImportError:
        return
    # Derandomised: CI explores the same examples on every run, so a red
    # build is a code change, not luck. The chaos fixture lives for a whole
    # test, which is what the function-scoped-fixture check warns about.
    profiles.register_profile(
        CI_PROFILE,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
        ],
    )
    if chosen is None:
        profiles.load_profile(CI_PROFILE)


def _raw(config: pytest.Config, name: str) -> tuple[str | None, str]:
    flag = "--waypoint-" + name.replace("_", "-")
    value = config.getoption(f"waypoint_{name}")
    if value is not None:
        return str(value), flag
    ini = config.getini(f"waypoint_{name}")
    return (str(ini).strip() or None), f"ini option waypoint_{name}"


def read_settings(config: pytest.Config) -> Settings:
    explicit = set()
    values: dict[str, Any] = {}
    for name, _, _ in OPTIONS:
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
    testcontainers = values.get("testcontainers", False)
    if testcontainers and store in ("memory", "sqlite"):
        raise pytest.UsageError(
            f"--waypoint-testcontainers=true starts a PostgreSQL server, but the "
            f"store is {store!r}: drop it, or use --waypoint-store=postgres"
        )
    if store is None:
        wants_postgres = dsn is not None or testcontainers
        store = "postgres" if wants_postgres else DEFAULT_STORE
    mode = values.get("mode", DEFAULT_MODE)
    if mode == "kill" and store == "memory":
        raise pytest.UsageError(
            "--waypoint-mode=kill runs workflows in child processes, which "
            "cannot open an in-memory store: use --waypoint-store=sqlite or "
            "--waypoint-store=postgres"
        )
    seed, seed_note = _seed(config, values.get("seed"))
    return Settings(
        store=store,
        dsn=dsn,
        seed=seed,
        max_scenarios=values.get("max_scenarios", DEFAULT_MAX_SCENARIOS),
        max_crashes=values.get("max_crashes", DEFAULT_MAX_CRASHES),
        schedule=values.get("schedule"),
        mode=mode,
        racers=values.get("racers", 0),
        faults=values.get("faults", ("crash",)),
        testcontainers=testcontainers,
        explicit=frozenset(explicit),
        seed_note=seed_note,
    )


def _seed(config: pytest.Config, given: int | str | None) -> tuple[int, str]:
    """This process's seed, and a note on where it came from."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "waypoint_seed" in workerinput:
        from pytest_waypoint.search import derive_seed

        run_seed = int(workerinput["waypoint_seed"])
        worker = str(workerinput.get("workerid", ""))
        seed = derive_seed(run_seed, worker)
        return seed, (
            f"seed {seed} (worker {worker}'s, derived from the run's seed: "
            f"--waypoint-seed={run_seed})"
        )
    if given == "last":
        cache = getattr(config, "cache", None)
        last = None if cache is None else cache.get(SEED_CACHE, None)
        if not isinstance(last, int):
            raise pytest.UsageError(
                "--waypoint-seed=last: no earlier run left its seed in pytest's "
                "cache (is the cacheprovider plugin disabled?); give a number"
            )
        given = last
    if given is None:
        given = int.from_bytes(os.urandom(_SEED_BITS // 8), "big")
    assert isinstance(given, int)
    return given, f"seed {given} (--waypoint-seed={given})"


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


def _parse_seed(raw: str, source: str) -> int | str:
    if raw == "last":
        return raw  # read from the cache once the config is at hand
    if not raw.isdigit() or int(raw) >= 2**_SEED_BITS:
        raise pytest.UsageError(
            f"{source}: bad seed {raw!r}; give a whole number from 0 to "
            f"{2**_SEED_BITS - 1}, 'last' for the previous run's, or leave it "
            "out for a random one"
        )
    return int(raw)


def _parse_mode(raw: str, source: str) -> str:
    if raw not in MODES:
        raise pytest.UsageError(
            f"{source}: unknown mode {raw!r}; choose one of {', '.join(MODES)}"
        )
    return raw


def _parse_racers(raw: str, source: str) -> int:
    if not raw.isdigit() or int(raw) == 1:
        raise pytest.UsageError(
            f"{source}: bad number of racing resumers {raw!r}; give 0 for no "
            "races, or 2 or more"
        )
    return int(raw)


def _parse_faults(raw: str, source: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(f.strip() for f in raw.split(",") if f.strip()))
    unknown = [f for f in chosen if f not in FAULTS]
    if unknown or "crash" not in chosen:
        raise pytest.UsageError(
            f"{source}: bad faults {raw!r}; give a comma-separated list of "
            f"{', '.join(FAULTS)} that includes crash, e.g. crash,db"
        )
    return chosen


def _parse_bool(raw: str, source: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise pytest.UsageError(f"{source}: {raw!r} is not true or false")


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
    "mode": _parse_mode,
    "racers": _parse_racers,
    "faults": _parse_faults,
    "testcontainers": _parse_bool,
}


def _redact(dsn: str) -> str:
    from waypoint.stores import redact

    return redact(dsn)
