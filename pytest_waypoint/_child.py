"""The child side of kill mode: run or resume one workflow, freeze at a point.

Forked by the zygote (``pytest_waypoint._zygote``), which calls ``serve``, or
where that cannot be, started by ``pytest_waypoint.kill`` as ``python -m
pytest_waypoint._child REPORT_FD``, which reads one JSON request line on stdin.
Either way the child runs the workflow and writes JSON lines to the report
pipe: ``ready`` (when a start gate was asked for), ``crash`` (the armed point
was reached) and ``result``. After ``crash`` it blocks reading stdin, with the
event loop frozen inside the runtime's hook, until the parent kills it with
SIGKILL: nothing after the crash point runs, not even a ``finally``. If the
parent goes away instead, stdin reaches end of file and the child leaves at
once rather than linger as an orphan.

The parent never imports this module.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from typing import Any, BinaryIO

#: Exit status when the parent vanished while the child waited for it.
ORPHANED_EXIT = 70


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class _Channel:
    def __init__(self, report: BinaryIO, control: BinaryIO) -> None:
        self.report = report
        self.control = control

    def send(self, **message: Any) -> None:
        try:
            self.report.write(json.dumps(message).encode() + b"\n")
            self.report.flush()
        except BrokenPipeError:
            # The parent is gone. Raised here, inside the runtime's hook, the
            # error would run the very code a crash must not.
            os._exit(ORPHANED_EXIT)

    def wait_for_parent(self) -> None:
        if not self.control.readline():
            os._exit(ORPHANED_EXIT)

    def freeze(self) -> None:
        # The parent answers a crash report only with SIGKILL; end of file
        # means it died first.
        self.control.read()
        os._exit(ORPHANED_EXIT)


async def _main(request: dict[str, Any], channel: _Channel) -> None:
    from pytest_waypoint.schedule import parse_point
    from waypoint import Waypoint
    from waypoint.decorators import workflow_definition
    from waypoint.hooks import CrashSite, armed
    from waypoint.serialization import decode_arguments, type_name

    for entry in reversed(request["sys_path"]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # Workflow code that opens its own store (an effect ledger, say) finds the
    # same database through the runtime's default.
    os.environ["WAYPOINT_DSN"] = request["dsn"]
    crash_at = parse_point(request["crash_at"]) if request["crash_at"] else None
    sites: list[str] = []
    positions: list[int | None] = []

    def hook(site: CrashSite) -> None:
        sites.append(site.point)
        positions.append(site.position)
        if crash_at is not None and crash_at.matches(site):
            channel.send(
                event="crash",
                point=site.point,
                position=site.position,
                sites=sites,
                positions=positions,
            )
            channel.freeze()

    fn = _resolve(request["target"])
    definition = workflow_definition(fn)
    args, kwargs = request["args"], request["kwargs"]
    if request.get("input") is not None:
        # Typed arguments (models, dates) are rebuilt as the runtime would
        # rebuild the recorded input.
        args, kwargs = decode_arguments(fn, request["input"])
    execution_id = request["execution_id"]
    async with Waypoint(request["dsn"], lease_seconds=request["lease_seconds"]) as wp:
        if request["gate"]:
            channel.send(event="ready")
            channel.wait_for_parent()
        try:
            with armed(hook):
                if request["resume"]:
                    output = await wp.resume(execution_id)
                else:
                    output = await wp.run(
                        fn, *args, execution_id=execution_id, **kwargs
                    )
        except Exception as exc:
            channel.send(
                event="result",
                status="failed",
                error_type=type_name(exc),
                error_message=str(exc),
                sites=sites,
                positions=positions,
            )
            return
    channel.send(
        event="result",
        status="completed",
        output=definition.codec.encode(output),
        sites=sites,
        positions=positions,
    )


def serve(request: dict[str, Any], report: BinaryIO, control: BinaryIO) -> None:
    """Run one request; ``control`` is the child's stdin, held open by the
    parent alone."""
    asyncio.run(_main(request, _Channel(report, control)))


def main() -> None:
    report = os.fdopen(int(sys.argv[1]), "wb")
    control = sys.stdin.buffer
    serve(json.loads(control.readline()), report, control)


if __name__ == "__main__":
    main()
