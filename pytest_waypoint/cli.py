"""``waypoint chaos MODULE:WORKFLOW``: crash-test a workflow without a test.

Runs the same exploration as ``chaos.explore`` in a test, on a temporary
SQLite file unless ``--dsn`` names a store, prints the crash matrix and
exits 1 when an invariant broke, so that CI can run it on any workflow:

    waypoint chaos examples.simple_agent:research --arg '"topic"'
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from pytest_waypoint.schedule import Schedule

__all__ = ["register"]

#: Exit status when the exploration found a violation (2 is argparse's).
EXIT_VIOLATION = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chaos = sub.add_parser(
        "chaos",
        help="crash-test a workflow at every step",
        description="Run a workflow once, then crash it at every crash point "
        "and resume it, checking the six invariants; exit 1 on a violation.",
    )
    chaos.add_argument("target", help="the workflow, as package.module:function")
    chaos.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="JSON",
        help="a positional argument of the workflow, as JSON (repeatable)",
    )
    chaos.add_argument(
        "--kwarg",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a keyword argument of the workflow (repeatable)",
    )
    chaos.add_argument(
        "--dsn", help="store URL (default: a temporary SQLite file, removed after)"
    )
    chaos.add_argument("--seed", type=int, default=0, help="seed of sampled runs")
    chaos.add_argument("--max-scenarios", type=int, default=None)
    chaos.add_argument("--max-crashes", type=int, default=None)
    chaos.add_argument(
        "--schedule", help="explore only this schedule, e.g. 'fetch#1@after_effect'"
    )
    chaos.add_argument(
        "--mode",
        choices=("inprocess", "kill"),
        default="inprocess",
        help="crash with an exception in this process, or SIGKILL a child "
        "process per run and resume (kill needs a SQLite file or PostgreSQL)",
    )
    chaos.add_argument(
        "--racers",
        type=int,
        default=0,
        metavar="K",
        help="after each single crash, also race K >= 2 resumers",
    )
    chaos.add_argument(
        "--db-faults",
        action="store_true",
        help="also cut the connection at each checkpoint's commit (PostgreSQL)",
    )
    chaos.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from waypoint.decorators import workflow_definition
    from waypoint.errors import ConfigurationError

    target = _load(args.target)
    workflow_definition(target)  # a step, a module, anything else: said now
    positional = [_json(text, "--arg") for text in args.arg]
    keywords = dict(_keyword(text) for text in args.kwarg)
    if args.max_scenarios is not None and args.max_scenarios < 1:
        raise ConfigurationError("--max-scenarios must be >= 1")
    if args.max_crashes is not None and args.max_crashes < 1:
        raise ConfigurationError("--max-crashes must be >= 1")
    with tempfile.TemporaryDirectory(prefix="waypoint-chaos-") as scratch:
        dsn = args.dsn or f"sqlite:///{Path(scratch) / 'chaos.db'}"
        text, ok = asyncio.run(_explore(args, target, positional, keywords, dsn))
    sys.stdout.write(text + "\n")
    return 0 if ok else EXIT_VIOLATION


async def _explore(
    args: argparse.Namespace,
    target: Any,
    positional: list[Any],
    keywords: dict[str, Any],
    dsn: str,
) -> tuple[str, bool]:
    from pytest_waypoint.harness import (
        DEFAULT_MAX_CRASHES,
        DEFAULT_MAX_SCENARIOS,
        Chaos,
    )
    from pytest_waypoint.schedule import parse_schedule
    from waypoint.serialization import decode_arguments
    from waypoint.stores import open_store

    call_args, call_kwargs = decode_arguments(
        target, _bound_json(target, positional, keywords)
    )
    store = open_store(dsn)
    await store.open()
    try:
        chaos = Chaos(
            store,
            seed=args.seed,
            max_scenarios=args.max_scenarios or DEFAULT_MAX_SCENARIOS,
            max_crashes=args.max_crashes or DEFAULT_MAX_CRASHES,
            schedules=[parse_schedule(args.schedule)] if args.schedule else [],
            reproduce=lambda s: _reproduce(args, s),
            mode=args.mode,
            racers=args.racers,
            faults=("crash", "db") if args.db_faults else ("crash",),
        )
        report = await chaos.explore(
            target, *call_args, raise_on_violation=False, **call_kwargs
        )
    finally:
        await store.close()
    return report.text(), report.ok


def _load(target: str) -> Any:
    from waypoint.errors import ConfigurationError

    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"bad workflow {target!r}: write package.module:function"
        )
    # The working directory first, as `python -m` would, so that a project's
    # own modules are found when the command runs from its root.
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r} for {target!r}: {exc}. Run the "
            "command from the directory that holds the package, or add that "
            "directory to PYTHONPATH"
        ) from exc
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(
            f"module {module_name!r} has no attribute {attribute!r}"
        ) from None
    return found


def _json(text: str, option: str) -> Any:
    from waypoint.errors import ConfigurationError

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{option} {text!r} is not JSON ({exc}); quote strings: --arg '\"text\"'"
        ) from None


def _keyword(text: str) -> tuple[str, Any]:
    from waypoint.errors import ConfigurationError

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise ConfigurationError(f"--kwarg {text!r}: write name=JSON")
    return name, _json(value, "--kwarg")


def _bound_json(target: Any, positional: list[Any], keywords: dict[str, Any]) -> str:
    from waypoint.errors import ConfigurationError

    try:
        bound = inspect.signature(target).bind(*positional, **keywords)
    except TypeError as exc:
        raise ConfigurationError(
            f"the arguments do not fit {getattr(target, '__qualname__', target)}"
            f"{inspect.signature(target)}: {exc}"
        ) from None
    return json.dumps(bound.arguments)


def _reproduce(args: argparse.Namespace, schedule: Schedule) -> str:
    words = ["waypoint", "chaos", args.target]
    words += [f"--arg={a}" for a in args.arg]
    words += [f"--kwarg={k}" for k in args.kwarg]
    if args.dsn:
        words.append(f"--dsn={args.dsn}")
    if args.mode != "inprocess":
        words.append(f"--mode={args.mode}")
    if args.racers:
        words.append(f"--racers={args.racers}")
    if args.db_faults:
        words.append("--db-faults")
    if schedule:
        words.append(f"--schedule={schedule}")
    return shlex.join(words)
