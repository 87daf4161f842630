"""The pytest plugin as a user meets it: options, ini, header, fixtures,
the crash marker and the summary line, each run in an inner session."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_waypoint import harness, plugin


@pytest.fixture(autouse=True)
def _schema_tools_loaded_outside() -> None:
    """Import Alembic and SQLAlchemy before any inner session does.

    An in-process inner session drops the modules it imported when it ends;
    SQLAlchemy's compiled parts do not survive a second import in one
    process, so the first SQLite store of a later session would fail.
    """
    import alembic.command  # noqa: F401
    import sqlalchemy  # noqa: F401


BASE = [
    "-p",
    "no:cacheprovider",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
]
AUTO = [*BASE, "-o", "asyncio_mode=auto"]

WORKFLOWS = """
from waypoint import checkpoint, workflow
from pytest_waypoint import effects


@checkpoint
async def fetch(item: str) -> str:
    return item.upper()


@checkpoint
async def send(text: str) -> str:
    await effects.apply("send", text)
    return f"sent {text}"


@workflow
async def notify(item: str) -> str:
    return await send(await fetch(item))
"""


def _module(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(
        test_module=WORKFLOWS + textwrap.dedent(body),
    )


def test_importing_the_plugin_imports_no_database_driver() -> None:
    code = (
        "import sys, pytest_waypoint.plugin\n"
        "loaded = sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in {'asyncpg', 'sqlalchemy', 'alembic'})\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_plugin_defaults_agree_with_the_harness() -> None:
    assert plugin.DEFAULT_MAX_SCENARIOS == harness.DEFAULT_MAX_SCENARIOS
    assert plugin.DEFAULT_MAX_CRASHES == harness.DEFAULT_MAX_CRASHES


def test_the_plugin_is_registered_by_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*Waypoint crash testing*", "*--waypoint-store*"])


def test_header_shows_the_effective_settings(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(
        *AUTO, "--waypoint-store=memory", "--waypoint-seed=7"
    )
    result.stdout.fnmatch_lines(
        [
            "waypoint: store=memory (an in-memory store per test), seed=7, "
            # (then, under CI, the Hypothesis profile the session loaded)
            "max-scenarios=500, max-crashes=1, mode=inprocess*"
        ]
    )


def test_ini_settings_apply_and_the_command_line_wins(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        """
        [pytest]
        waypoint_store = memory
        waypoint_seed = 11
        waypoint_max_scenarios = 40
        waypoint_max_crashes = 2
        """
    )
    from_ini = pytester.runpytest_inprocess(*AUTO)
    from_cli = pytester.runpytest_inprocess(*AUTO, "--waypoint-seed=12")

    from_ini.stdout.fnmatch_lines(
        ["waypoint: store=memory *seed=11, max-scenarios=40, max-crashes=2, *"]
    )
    from_cli.stdout.fnmatch_lines(["waypoint: store=memory *seed=12, *"])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "--waypoint-store=mongo",
            "unknown store 'mongo'; choose one of memory, sqlite, postgres",
        ),
        ("--waypoint-seed=-3", "bad seed '-3'; give a whole number from 0"),
        ("--waypoint-max-scenarios=0", "bad maximum number of scenarios '0'"),
        ("--waypoint-max-crashes=x", "bad maximum number of crashes 'x'"),
        ("--waypoint-schedule=fetch@soon", "bad crash point 'fetch@soon'"),
        ("--waypoint-dsn=mysql://db", "is not a PostgreSQL URL"),
        ("--waypoint-mode=fork", "unknown mode 'fork'; choose one of inprocess, kill"),
        ("--waypoint-racers=1", "give 0 for no races, or 2 or more"),
        ("--waypoint-faults=db", "of crash, db that includes crash"),
        ("--waypoint-seed=first", "'last' for the previous run's"),
        (
            "--waypoint-mode=kill",
            "cannot open an in-memory store: use --waypoint-store=sqlite",
        ),
        ("--waypoint-testcontainers=maybe", "'maybe' is not true or false"),
        (
            "--waypoint-testcontainers=true",
            "starts a PostgreSQL server, but the store is 'memory'",
        ),
    ],
)
def test_a_bad_setting_is_a_usage_error(
    pytester: pytest.Pytester, option: str, message: str
) -> None:
    result = pytester.runpytest_inprocess(*AUTO, "--waypoint-store=memory", option)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_the_header_shows_races_and_faults(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nwaypoint_racers = 3\nwaypoint_faults = crash,db\n")
    result = pytester.runpytest_inprocess(*AUTO, "--waypoint-mode=kill")

    result.stdout.fnmatch_lines(
        ["waypoint: store=sqlite *, mode=kill, racers=3, faults=crash,db*"]
    )


TESTCONTAINERS_TEST = """
async def test_journal(waypoint_store):
    pass
"""


def test_testcontainers_is_asked_for_when_no_server_answers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No server at the default URL, and no testcontainers package (or no
    # Docker) here: the test is skipped, and the reason says both.
    from pytest_waypoint import _postgres

    monkeypatch.setattr(_postgres, "DEFAULT_TEST_DSN", "postgresql://x@127.0.0.1:9/x")
    monkeypatch.delenv("WAYPOINT_TEST_DSN", raising=False)
    monkeypatch.delenv("WAYPOINT_TESTCONTAINERS", raising=False)
    pytester.makepyfile(test_tc=TESTCONTAINERS_TEST)
    pytester.makeini("[pytest]\nwaypoint_testcontainers = true\n")

    result = pytester.runpytest_inprocess(*AUTO, "-rs")

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "waypoint: store=postgres (a PostgreSQL schema per test at *, else "
            "in a testcontainers server)*",
            "*no PostgreSQL server answers at postgresql://x@127.0.0.1:9/x*; "
            "testcontainers was asked for, but *",
        ]
    )


def test_plugin_choices_agree_with_the_harness() -> None:
    assert plugin.MODES == harness.MODES
    assert plugin.DEFAULT_MODE == harness.DEFAULT_MODE
    assert plugin.FAULTS == harness.FAULTS


def test_a_bad_ini_setting_names_the_ini_option(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nwaypoint_store = redis\n")
    result = pytester.runpytest_inprocess(*AUTO)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ini option waypoint_store: unknown store 'redis'" in result.stderr.str()


def test_a_dsn_with_a_local_store_is_refused(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(
        *AUTO, "--waypoint-store=sqlite", "--waypoint-dsn=postgresql://h/db"
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "use --waypoint-store=postgres" in result.stderr.str()


FIXTURES_TEST = """
import pathlib

from waypoint import MemoryStore, SQLiteStore, Waypoint


async def test_fixtures(waypoint_store, waypoint, effects, fake_llm, request):
    store = request.config.getoption("waypoint_store")
    expected = MemoryStore if store == "memory" else SQLiteStore
    assert isinstance(waypoint_store, expected)
    if store == "sqlite":
        assert pathlib.Path(waypoint_store.path).is_file()
    assert isinstance(waypoint, Waypoint) and waypoint.store is waypoint_store

    assert await waypoint.run(notify, "a") == "sent A"
    assert await effects.counts() == {"send": 1}

    fake_llm.script({"plan": "step one then two"})
    assert await fake_llm.complete("plan a trip") == "step one then two"
    assert (fake_llm.calls, fake_llm.tokens) == (1, 7)


async def test_each_test_gets_a_fresh_store(effects):
    assert await effects.counts() == {}
"""


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_fixtures_on_each_local_store(pytester: pytest.Pytester, store: str) -> None:
    _module(pytester, FIXTURES_TEST)
    result = pytester.runpytest_inprocess(*AUTO, f"--waypoint-store={store}")
    result.assert_outcomes(passed=2)


STRICT_TEST = """
import pytest


@pytest.mark.asyncio
async def test_strict(waypoint, chaos, effects):
    assert await waypoint.run(notify, "b") == "sent B"
    report = await chaos.explore(notify, "c")
    assert report.ok
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_works_under_pytest_asyncio_modes(pytester: pytest.Pytester, mode: str) -> None:
    _module(pytester, STRICT_TEST)
    result = pytester.runpytest_inprocess(
        *BASE, "-o", f"asyncio_mode={mode}", "--waypoint-store=memory"
    )
    result.assert_outcomes(passed=1)


MARKER_TEST = """
import pytest


@pytest.mark.waypoint_crash("send#1@after_effect")
async def test_survives_a_crash(waypoint, effects):
    assert await waypoint.run(notify, "x") == "sent X"
    assert await effects.counts() == {"send": 1}
    assert await effects.sends() == {"send": 2}  # re-sent, dropped by key
    [run] = waypoint.scenarios
    assert [str(p) for p in run.run.fired] == ["send#1@after_effect"]
    assert len(run.run.segments) == 2


@pytest.mark.waypoint_crash("fetch#1@after_commit", "send#1@before")
async def test_two_crashes(waypoint):
    assert await waypoint.run(notify, "y") == "sent Y"
    assert len(waypoint.scenarios[0].run.segments) == 3


@pytest.mark.waypoint_crash("fetch#1@after_effect")
async def test_marker_limits_explore(chaos):
    report = await chaos.explore(notify, "z")
    assert [str(s.schedule) for s in report.scenarios] == ["fetch#1@after_effect"]


@pytest.mark.waypoint_crash("fetch#9@before")
async def test_point_that_never_fires(waypoint):
    await waypoint.run(notify, "w")
"""


def test_the_marker_runs_a_test_under_a_crash_schedule(
    pytester: pytest.Pytester,
) -> None:
    _module(pytester, MARKER_TEST)
    result = pytester.runpytest_inprocess(*AUTO, "--waypoint-store=sqlite")

    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_point_that_never_fires*",
            "*crash point(s) fetch#9@before of schedule fetch#9@before never "
            "fired*fetch#1@before*",
        ]
    )


def test_a_bad_marker_argument_fails_the_test(pytester: pytest.Pytester) -> None:
    _module(
        pytester,
        """
        import pytest

        @pytest.mark.waypoint_crash("fetch#0@before")
        async def test_bad(waypoint):
            pass
        """,
    )
    result = pytester.runpytest_inprocess(*AUTO, "--waypoint-store=memory")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*waypoint_crash: bad crash point*"])


def test_the_summary_line_totals_the_session(pytester: pytest.Pytester) -> None:
    _module(
        pytester,
        """
        async def test_one(chaos):
            await chaos.explore(notify, "a")

        async def test_two(chaos):
            await chaos.explore(notify, "b")
            await chaos.explore(notify, "c")
        """,
    )
    result = pytester.runpytest_inprocess(*AUTO, "--waypoint-store=memory")

    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "waypoint: 3 workflows explored, 21 scenarios run, 0 violations, "
            "0 LLM calls (0 tokens) saved by the journal"
        ]
    )


def test_no_summary_line_without_chaos(pytester: pytest.Pytester) -> None:
    _module(pytester, "def test_plain():\n    pass\n")
    result = pytester.runpytest_inprocess(*AUTO)

    assert "workflows explored" not in result.stdout.str()


@pytest.mark.postgres
def test_the_postgres_store_gives_each_test_a_schema(
    pytester: pytest.Pytester,
) -> None:
    from pytest_waypoint._postgres import server_dsn

    _module(
        pytester,
        """
        async def test_pg(waypoint_store, chaos):
            assert type(waypoint_store).__name__ == "PostgresStore"
            assert (await chaos.explore(notify, "a")).ok
        """,
    )
    result = pytester.runpytest_subprocess(*AUTO, f"--waypoint-dsn={server_dsn()}")

    outcomes = result.parseoutcomes()
    if outcomes.get("skipped"):
        pytest.skip("no PostgreSQL server answers")
    result.assert_outcomes(passed=1)


def test_the_plugin_loads_without_pytest_asyncio(tmp_path: Path) -> None:
    # Installed without the testing extra, the plugin still loads in every
    # pytest run of the environment; only its async fixtures say what to add.
    # A package that fails to import shadows the installed pytest_asyncio.
    (tmp_path / "pytest_asyncio").mkdir()
    (tmp_path / "pytest_asyncio" / "__init__.py").write_text(
        "raise ImportError('pytest-asyncio is not installed (simulated)')\n"
    )
    (tmp_path / "test_plain.py").write_text(
        "def test_plain():\n    assert True\n\n"
        "def test_store(waypoint_store):\n    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:asyncio",
            "-p",
            "no:cacheprovider",
            "-q",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "1 passed" in done.stdout, done.stdout + done.stderr
    assert "needs pytest-asyncio: pip install 'waypoint-sdk[testing]'" in done.stdout
