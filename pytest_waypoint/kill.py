"""Kill mode: run a workflow in a child process and SIGKILL it at a crash point.

An in-process crash is an exception, so ``finally`` blocks, context managers
and ``atexit`` handlers still run on the way out, and a bug that relies on
them stays hidden. Here the child reports over a pipe that it has reached the
armed point and then blocks inside the runtime's hook; the parent sends
SIGKILL and reaps the child. Nothing after the crash point runs. No sleeps
and no timing guesses: the kill follows the child's own report.

Reaping matters: the runtime resumes at once an execution whose lease names a
dead process on this host, and a killed child stays "alive" (a zombie) until
its parent has waited for it. Every outcome is returned only after the wait.

The child's cost is its start-up (importing Python, pydantic and Waypoint),
about 0.2 s, so a scenario of crash plus resume costs two of them; see
``bench/kill.py``. A caller may resume in its own process with a fresh runtime
when no later crash is armed, which halves that.
"""

# TODO(kill-speed): a warm zygote (one process that has imported Waypoint and
# the workflow, forking a child per run and reaping it for the parent) would
# cut a child from ~0.2 s to a few ms; not done yet because the parent must
# then learn of the reaping from the zygote before it may resume.

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_waypoint.schedule import CrashPoint
from waypoint.errors import ConfigurationError, WaypointError
from waypoint.stores.base import Store
from waypoint.stores.sqlite import SQLiteStore

__all__ = ["ChildOutcome", "ChildProcess", "ChildStatus", "child_dsn", "run_child"]

#: How long a child may take before it is killed and reported as timed out.
#: Start-up alone takes a few hundred milliseconds on a loaded machine.
DEFAULT_TIMEOUT = 30.0

#: The child's lease. Its length never delays a resume: a killed child is
#: reaped before the outcome is returned, and the runtime takes over at once
#: a lease held by a dead process on this host.
CHILD_LEASE_SECONDS = 30.0

#: How much of the child's stdout and stderr an outcome keeps, from the end.
LOG_TAIL_BYTES = 8192

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class ChildStatus(enum.StrEnum):
    """How a child ended."""

    CRASHED = "crashed"  # reached the armed point and was killed there
    COMPLETED = "completed"  # the workflow returned; output_json holds it
    FAILED = "failed"  # run or resume raised; error_type says what
    TIMED_OUT = "timed_out"  # killed after ``timeout`` seconds without a result
    DIED = "died"  # exited without a result (import error, os._exit, signal)


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """What happened to one child run.

    ``sites`` lists the crash sites the child passed, in order, as
    ``name#k@phase``: ``@after_effect`` means a step body ran,
    ``@after_commit`` that its checkpoint was committed. A point that was
    armed but never reached shows as ``fired`` False with a terminal status.
    """

    status: ChildStatus
    crash_at: CrashPoint | None
    point: str | None = None
    position: int | None = None
    output_json: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    sites: tuple[str, ...] = ()
    pid: int = 0
    returncode: int | None = None
    seconds: float = 0.0
    log: str = ""

    @property
    def fired(self) -> bool:
        return self.status is ChildStatus.CRASHED

    @property
    def missed(self) -> bool:
        """The armed point never fired although the run ended normally."""
        return self.crash_at is not None and self.status in (
            ChildStatus.COMPLETED,
            ChildStatus.FAILED,
        )

    def output(self) -> Any:
        """The workflow's output, decoded from JSON (None unless completed)."""
        return None if self.output_json is None else json.loads(self.output_json)

    def describe(self) -> str:
        """One line for a report."""
        if self.status is ChildStatus.CRASHED:
            return f"killed at {self.point} (pid {self.pid})"
        if self.status is ChildStatus.COMPLETED:
            return f"completed with {self.output_json}"
        if self.status is ChildStatus.FAILED:
            return f"failed with {self.error_type}: {self.error_message}"
        tail = self.log.strip().splitlines()[-1:] or ["no output"]
        return f"{self.status.value} (exit {self.returncode}): {tail[0]}"


def child_dsn(store: Store) -> str:
    """A URL from which a child process opens the same journal as ``store``.

    A SQLite path becomes absolute (the child may not share the working
    directory's meaning); a PostgreSQL store in a schema of its own passes the
    schema as the ``search_path`` server setting, which asyncpg reads from
    the URL's query.
    """
    if isinstance(store, SQLiteStore):
        query = "?durability=power" if store.durability == "power" else ""
        return f"sqlite:///{store.path.resolve()}{query}"
    if store.dsn.startswith(("postgresql://", "postgres://")):
        # The store keeps its URL with the password for connecting; the public
        # ``dsn`` is redacted.
        dsn = str(getattr(store, "_dsn", store.dsn))
        schema = getattr(store, "schema", None)
        if schema is None:
            return dsn
        return f"{dsn}{'&' if '?' in dsn else '?'}search_path={schema}"
    raise ConfigurationError(
        f"kill mode needs a journal a child process can open, and {store!r} "
        "lives in this process only: use a SQLite file or PostgreSQL"
    )


def _decode_json(text: str, kind: type, what: str) -> Any:
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{what} must be JSON text, not {text!r}: {exc}"
        ) from None
    if not isinstance(value, kind):
        raise ConfigurationError(
            f"{what} must encode a JSON {'array' if kind is list else 'object'}, "
            f"not {text!r}"
        )
    return value


def _check_target(target: str) -> None:
    if not isinstance(target, str) or not all(target.partition(":")):
        raise ConfigurationError(
            f"bad workflow reference {target!r}: write 'package.module:function' "
            "with a module the child can import"
        )


class ChildProcess:
    """One child running or resuming a workflow, started but not yet awaited.

    ``run_child`` is the one-call form. Use this class to line several children
    up behind a start gate: start each with ``gate=True``, await ``ready()`` on
    all of them, then call ``go()`` on each so that they race.
    """

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        report: asyncio.StreamReader,
        transport: asyncio.BaseTransport,
        crash_at: CrashPoint | None,
    ) -> None:
        self.process = process
        self.crash_at = crash_at
        self._report = report
        self._transport = transport
        self._log = bytearray()
        self._log_task = asyncio.get_running_loop().create_task(self._collect_log())
        self._started = time.perf_counter()

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls,
        target: str,
        *,
        dsn: str,
        execution_id: str,
        args_json: str = "[]",
        kwargs_json: str = "{}",
        crash_at: CrashPoint | None = None,
        resume: bool = False,
        gate: bool = False,
        lease_seconds: float = CHILD_LEASE_SECONDS,
    ) -> ChildProcess:
        _check_target(target)
        request = {
            "target": target,
            "dsn": dsn,
            "execution_id": execution_id,
            "args": _decode_json(args_json, list, "args_json"),
            "kwargs": _decode_json(kwargs_json, dict, "kwargs_json"),
            "crash_at": None if crash_at is None else str(crash_at),
            "resume": resume,
            "gate": gate,
            "lease_seconds": lease_seconds,
            # The workflow module must import in the child as it does here.
            "sys_path": [p or os.getcwd() for p in sys.path],
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p
        )
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pytest_waypoint._child",
                str(write_fd),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(write_fd,),
                env=env,
            )
        finally:
            # Only the child may hold the write end, so that its death is
            # end of file here.
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader),
            os.fdopen(read_fd, "rb", buffering=0),
        )
        child = cls(process, reader, transport, crash_at)
        assert process.stdin is not None
        process.stdin.write(json.dumps(request).encode() + b"\n")
        await process.stdin.drain()
        return child

    async def _collect_log(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while chunk := await stream.read(4096):
            self._log += chunk
            del self._log[:-LOG_TAIL_BYTES]

    async def _message(self) -> dict[str, Any] | None:
        line = await self._report.readline()
        if not line:
            return None
        message: dict[str, Any] = json.loads(line)
        return message

    async def ready(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until a gated child has opened its runtime and waits for go()."""
        async with asyncio.timeout(timeout):
            message = await self._message()
        if message is None or message.get("event") != "ready":
            outcome = await self._finish(ChildStatus.DIED, {})
            raise WaypointError(
                f"child {self.pid} ended before it was ready: {outcome.describe()}"
            )

    def go(self) -> None:
        """Release a gated child."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def outcome(self, timeout: float = DEFAULT_TIMEOUT) -> ChildOutcome:
        """Wait for the child's result, or kill it at its crash point."""
        try:
            async with asyncio.timeout(timeout):
                message = await self._message()
        except TimeoutError:
            return await self._finish(ChildStatus.TIMED_OUT, {})
        if message is None:
            return await self._finish(ChildStatus.DIED, {})
        if message["event"] == "crash":
            return await self._finish(ChildStatus.CRASHED, message)
        if message["event"] != "result":
            await self.kill()
            raise WaypointError(
                f"child {self.pid} said {message!r} where a crash or a result "
                "was due: a child started with gate=True needs ready() and "
                "go() before outcome()"
            )
        return await self._finish(ChildStatus(message["status"]), message)

    async def kill(self) -> None:
        """SIGKILL the child and reap it; safe to call when it has ended."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        await self._close()

    async def _close(self) -> None:
        self._transport.close()
        if self.process.stdin is not None:
            self.process.stdin.close()
        await self._log_task

    async def _finish(
        self, status: ChildStatus, message: dict[str, Any]
    ) -> ChildOutcome:
        if status in (ChildStatus.CRASHED, ChildStatus.TIMED_OUT):
            await self.kill()
        else:
            await self.process.wait()
            await self._close()
        return ChildOutcome(
            status=status,
            crash_at=self.crash_at,
            point=message.get("point"),
            position=message.get("position"),
            output_json=message.get("output"),
            error_type=message.get("error_type"),
            error_message=message.get("error_message"),
            sites=tuple(message.get("sites", ())),
            pid=self.pid,
            returncode=self.process.returncode,
            seconds=time.perf_counter() - self._started,
            log=self._log.decode(errors="replace"),
        )


async def run_child(
    target: str,
    *,
    dsn: str,
    execution_id: str,
    args_json: str = "[]",
    kwargs_json: str = "{}",
    crash_at: CrashPoint | None = None,
    resume: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> ChildOutcome:
    """Run (or with ``resume``, resume) a workflow in a child process.

    ``target`` is ``'package.module:function'``, a ``@workflow`` function the
    child imports (with this process's ``sys.path``). With ``crash_at`` armed,
    the child is killed with SIGKILL when it reaches that point. The child's
    ``WAYPOINT_DSN`` is ``dsn``, so workflow code that opens the default
    store reaches the same database. Returns after the child has been reaped.
    """
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigurationError(
            f"timeout must be a positive number of seconds, not {timeout!r}"
        )
    child = await ChildProcess.start(
        target,
        dsn=dsn,
        execution_id=execution_id,
        args_json=args_json,
        kwargs_json=kwargs_json,
        crash_at=crash_at,
        resume=resume,
    )
    try:
        return await child.outcome(timeout)
    except BaseException:
        # Cancelled (or worse): never leave a frozen child behind.
        await asyncio.shield(child.kill())
        raise
