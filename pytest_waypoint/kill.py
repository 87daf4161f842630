"""Kill mode: run a workflow in a child process and SIGKILL it at a crash point.

An in-process crash is an exception, so ``finally`` blocks, context managers
and ``atexit`` handlers still run on the way out, and a bug that relies on
them stays hidden. Here the child reports over a pipe that it has reached the
armed point and then blocks inside the runtime's hook; the parent sends it
SIGKILL. Nothing after the crash point runs. No sleeps and no timing guesses:
the kill follows the child's own report.

Reaping matters: the runtime resumes at once an execution whose lease names a
dead process on this host, and a killed child stays "alive" (a zombie) until
its parent has waited for it. Every outcome is returned only after the wait.

A child is forked from a warm zygote (``pytest_waypoint._zygote``), one per
parent and ``sys.path``, started on first use, which has imported Waypoint,
pydantic and the workflow's module; a child so starts in a few milliseconds.
The zygote is the child's parent, so it reaps the child and tells this
process over a pipe; the outcome waits for that word. The zygote never opens
a store and refuses to fork after an import that left a descriptor open or
started a thread, so no database connection or event loop is ever shared:
each child opens its own store after the fork. Where fork is missing, or the
zygote refuses, a child is a fresh ``python -m pytest_waypoint._child``
(about 0.2 s to start). A caller may resume in its own process with a fresh
runtime when no later crash is armed, which saves a child.
"""

# TODO(kill-speed): a forked child still builds its workflow's pydantic
# adapters and opens its store, most of its ~8 ms; the zygote could build the
# adapters before it forks.

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_waypoint._zygote import FDS_PER_REQUEST, HEADER
from pytest_waypoint.invariants import Segment
from pytest_waypoint.schedule import CrashPoint, parse_point
from waypoint.decorators import WorkflowDef, workflow_definition
from waypoint.errors import ConfigurationError, WaypointError
from waypoint.serialization import encode_arguments
from waypoint.stores.base import Store
from waypoint.stores.sqlite import SQLiteStore

__all__ = [
    "ChildFailed",
    "ChildOutcome",
    "ChildProcess",
    "ChildStatus",
    "KillDriver",
    "child_dsn",
    "run_child",
    "workflow_target",
]

#: How long a child may take before it is killed and reported as timed out.
#: Start-up alone takes a few hundred milliseconds on a loaded machine.
DEFAULT_TIMEOUT = 30.0

#: The child's lease. Its length never delays a resume: a killed child is
#: reaped before the outcome is returned, and the runtime takes over at once
#: a lease held by a dead process on this host.
CHILD_LEASE_SECONDS = 30.0

#: How much of the child's stdout and stderr an outcome keeps, from the end.
LOG_TAIL_BYTES = 8192

#: Whether children are forked from a zygote; where False (no fork on this
#: system) each child is a fresh interpreter.
FORK_CHILDREN = hasattr(os, "fork") and hasattr(socket, "send_fds")

#: Zygotes kept at once, one per ``sys.path``; an idle one beyond these is
#: shut down. Pytester runs change ``sys.path`` for each inner session.
MAX_ZYGOTES = 4

#: How long a zygote may take to leave once its socket is closed.
ZYGOTE_EXIT_SECONDS = 5.0

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
    positions: tuple[int | None, ...] = ()
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
        f"kill mode needs a journal a child process can open, and a "
        f"{type(store).__name__} ({store.dsn}) lives in this process only: use "
        "a SQLite file or PostgreSQL (--waypoint-store=sqlite or postgres; "
        "waypoint chaos --dsn)"
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


class _ControlPipe:
    """The write end of a forked child's stdin."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        # A few bytes into an empty pipe never block; a child that has died
        # has no use for them.
        with contextlib.suppress(BrokenPipeError):
            os.write(self._fd, data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _ForkedProcess:
    """A child forked by a zygote, with what ``ChildProcess`` needs of it."""

    def __init__(
        self,
        pid: int,
        zygote: _Zygote,
        control_fd: int,
        pipes: dict[str, tuple[asyncio.StreamReader, asyncio.BaseTransport]],
    ) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = _ControlPipe(control_fd)
        self.stdout = pipes["log"][0]
        self._status = pipes["status"][0]
        self._transports = [transport for _, transport in pipes.values()]
        self._zygote = zygote
        zygote.live += 1

    def send_signal(self, signum: int) -> None:
        # Until the zygote's line says the child was reaped, the pid is the
        # child's: no other process gets it before the kernel has cycled
        # through every pid, and the line follows the reaping at once.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    async def wait(self) -> int:
        if self.returncode is None:
            line = await self._status.readline()
            if not line:
                raise WaypointError(
                    f"the kill-mode zygote (pid {self._zygote.process.pid}) ended "
                    f"before it reaped child {self.pid}; please report this bug"
                )
            self.returncode = int(json.loads(line)["returncode"])
            self._zygote.reaped()
        return self.returncode

    def close(self) -> None:
        self.stdin.close()
        for transport in self._transports:
            transport.close()


class _Zygote:
    """This process's end of one zygote (see ``pytest_waypoint._zygote``)."""

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pytest_waypoint._zygote"],
                stdin=theirs.fileno(),
                # Children get pipes of their own; the zygote reports on
                # theirs, and pytest's capture files must not outlive a test.
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket = ours
        self.live = 0
        self.retired = False

    def send(self, request: dict[str, Any], fds: list[int]) -> None:
        body = json.dumps(request).encode()
        data = HEADER.pack(len(body)) + body
        sent = socket.send_fds(self.socket, [data], fds)
        self.socket.sendall(data[sent:])

    def reaped(self) -> None:
        self.live -= 1
        if self.retired and self.live == 0:
            self.close()

    def retire(self) -> None:
        """Fork no more; leave once the children still running are reaped."""
        self.retired = True
        if self.live == 0:
            self.close()

    def close(self, *, kill: bool = False) -> None:
        # End of file tells the zygote to kill its children and leave.
        self.socket.close()
        if kill:
            self.process.kill()
        try:
            self.process.wait(ZYGOTE_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Zygotes:
    """This process's zygotes, one per ``sys.path``, least recently used
    first; and the ``sys.path`` values whose children are spawned instead."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_path: dict[tuple[str, ...], _Zygote] = {}
        self.spawn_only: set[tuple[str, ...]] = set()
        self.started_any = False

    def get(self, key: tuple[str, ...], env: dict[str, str]) -> _Zygote | None:
        with self.lock:
            if key in self.spawn_only:
                return None
            zygote = self.by_path.pop(key, None)
            if zygote is not None and zygote.process.poll() is not None:
                zygote.close()
                zygote = None
            if zygote is None:
                zygote = self._start(env)
            self.by_path[key] = zygote
            return zygote

    def _start(self, env: dict[str, str]) -> _Zygote:
        if not self.started_any:
            atexit.register(self.close)
            self.started_any = True
        for old_key, old in list(self.by_path.items()):
            if len(self.by_path) < MAX_ZYGOTES:
                break
            if old.live == 0:
                del self.by_path[old_key]
                old.close()
        return _Zygote(env)

    def retire(
        self, key: tuple[str, ...], zygote: _Zygote, *, spawn_only: bool
    ) -> None:
        with self.lock:
            if self.by_path.get(key) is zygote:
                del self.by_path[key]
            if spawn_only:
                self.spawn_only.add(key)
        zygote.retire()

    def close(self) -> None:
        with self.lock:
            closing = list(self.by_path.values())
            self.by_path.clear()
        for zygote in closing:
            zygote.socket.close()
        for zygote in closing:
            zygote.close()

    def forget(self) -> None:
        # A forked copy of this process must not keep the zygotes' sockets
        # open: each zygote leaves when the process that started it does. The
        # handles stay referenced, so that no copy ever waits for them.
        self.lock = threading.Lock()
        for zygote in self.by_path.values():
            zygote.socket.close()
        _inherited.extend(self.by_path.values())
        self.by_path = {}


_zygotes = _Zygotes()
_inherited: list[_Zygote] = []

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_zygotes.forget)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


async def _read_pipe(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader),
        os.fdopen(fd, "rb", buffering=0),
    )
    return reader, transport


async def _fork_in(
    zygote: _Zygote, request: dict[str, Any]
) -> tuple[_ForkedProcess, asyncio.StreamReader, asyncio.BaseTransport] | str:
    """A child forked by ``zygote``, or why not: ``gone``, ``stale``,
    ``unsafe``, ``broken`` or ``stuck``."""
    pairs = [os.pipe() for _ in range(FDS_PER_REQUEST)]
    control, report, log, status = pairs
    # The child (the zygote, for status) holds the other ends alone, so that
    # its death is end of file here.
    theirs = [control[0], report[1], log[1], status[1]]
    ours = [control[1], report[0], log[0], status[0]]
    pipes: dict[str, tuple[asyncio.StreamReader, asyncio.BaseTransport]] = {}
    try:
        try:
            zygote.send(request, theirs)
        except OSError:
            return "gone"
        finally:
            _close_fds(theirs)
        for name, fd in (("status", status[0]), ("report", report[0]), ("log", log[0])):
            pipes[name] = await _read_pipe(fd)
            ours.remove(fd)
        try:
            async with asyncio.timeout(DEFAULT_TIMEOUT):
                line = await pipes["status"][0].readline()
        except TimeoutError:
            return "stuck"
        first = json.loads(line) if line else {"refused": "gone"}
        if "pid" not in first:
            return str(first["refused"])
        report_reader, report_transport = pipes.pop("report")
        process = _ForkedProcess(int(first["pid"]), zygote, control[1], pipes)
        ours.remove(control[1])
        pipes = {}
        return process, report_reader, report_transport
    finally:
        _close_fds(ours)
        for _, transport in pipes.values():
            transport.close()


async def _fork_child(
    request: dict[str, Any],
) -> tuple[_ForkedProcess, asyncio.StreamReader, asyncio.BaseTransport] | None:
    """Fork a child from this ``sys.path``'s zygote, or None to spawn one."""
    key = tuple(request["sys_path"])
    for attempt in (1, 2):
        zygote = _zygotes.get(key, request["env"])
        if zygote is None:
            return None
        forked = await _fork_in(zygote, request)
        if not isinstance(forked, str):
            return forked
        if forked == "stuck":
            zygote.close(kill=True)
        # A changed module or a lost zygote is worth one fresh zygote; an
        # unsafe import or a failed warm-up would fail the same way again.
        again = forked in ("stale", "gone") and attempt == 1
        _zygotes.retire(key, zygote, spawn_only=not again and forked != "stale")
        if not again:
            return None
    return None


class ChildProcess:
    """One child running or resuming a workflow, started but not yet awaited.

    ``run_child`` is the one-call form. Use this class to line several children
    up behind a start gate: start each with ``gate=True``, await ``ready()`` on
    all of them, then call ``go()`` on each so that they race.
    """

    def __init__(
        self,
        process: asyncio.subprocess.Process | _ForkedProcess,
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
        input_json: str | None = None,
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
            "input": input_json,
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
        if FORK_CHILDREN:
            # A forked child takes this process's environment and directory
            # as they are now, not as they were when the zygote started.
            forked = await _fork_child({**request, "env": env, "cwd": os.getcwd()})
            if forked is not None:
                return cls(*forked, crash_at)
        return await cls._spawn(request, env, crash_at)

    @classmethod
    async def _spawn(
        cls, request: dict[str, Any], env: dict[str, str], crash_at: CrashPoint | None
    ) -> ChildProcess:
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
        reader, transport = await _read_pipe(read_fd)
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
        if isinstance(self.process, _ForkedProcess):
            self.process.close()

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
            positions=tuple(message.get("positions", ())),
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
    input_json: str | None = None,
    crash_at: CrashPoint | None = None,
    resume: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> ChildOutcome:
    """Run (or with ``resume``, resume) a workflow in a child process.

    ``target`` is ``'package.module:function'``, a ``@workflow`` function the
    child imports (with this process's ``sys.path``). With ``crash_at`` armed,
    the child is killed with SIGKILL when it reaches that point. The child's
    ``WAYPOINT_DSN`` is ``dsn``, so workflow code that opens the default
    store reaches the same database. ``input_json`` (from
    ``waypoint.serialization.encode_arguments``), when given, replaces
    ``args_json`` and ``kwargs_json`` and rebuilds typed arguments. Returns
    after the child has been reaped.
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
        input_json=input_json,
        crash_at=crash_at,
        resume=resume,
    )
    try:
        return await child.outcome(timeout)
    except BaseException:
        # Cancelled (or worse): never leave a frozen child behind.
        await asyncio.shield(child.kill())
        raise


# The harness's driver ------------------------------------------------------


class ChildFailed(WaypointError):
    """A child's run ended with an error (``error_type`` names its type) or
    without a result at all (``status`` says how)."""

    error_type: str | None = None
    status: ChildStatus | None = None


def workflow_target(definition: WorkflowDef) -> str:
    """``module:qualname`` of a workflow, checked to import back to it.

    A child process finds the workflow only by importing it, so it must live
    at the top level of a module that is not ``__main__`` (or is run with
    ``python -m``, whose module name is known).
    """
    fn = definition.fn
    module_name = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", "")
    if module_name == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module_name = getattr(spec, "name", None) or module_name
    target = f"{module_name}:{qualname}"
    if "<locals>" in qualname or module_name == "__main__" or not qualname:
        raise ConfigurationError(
            f"kill mode runs workflow {definition.name!r} in a child process, "
            f"which must import it, and {target!r} cannot be imported: define "
            "the workflow at the top level of a module (not inside a function "
            "or a script's __main__)"
        )
    module = sys.modules.get(module_name)
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is None or workflow_definition(found).name != definition.name:
        raise ConfigurationError(
            f"kill mode runs workflow {definition.name!r} in a child process, "
            f"which imports it as {target!r}, but that name does not lead back "
            "to the workflow: define it at the top level of its module"
        )
    return target


class KillDriver:
    """Runs each segment in a child process, SIGKILLed at the crash point.

    Nothing after the point runs in the child: no ``finally``, no ``atexit``,
    no flush. Every segment, the last fault-free resume included, runs in a
    fresh child, as it would after a real crash. The store must be one a
    child can open (a SQLite file or PostgreSQL; see ``child_dsn``).
    """

    name = "kill"

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._targets: dict[str, str] = {}

    def check(self, store: Store, definition: WorkflowDef) -> None:
        """Raise ``ConfigurationError`` unless a child can run ``definition``
        on ``store``; checked once, before the first child starts."""
        child_dsn(store)
        self._targets[definition.name] = workflow_target(definition)

    async def segment(
        self,
        store: Store,
        workflow: WorkflowDef,
        execution_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        pending: list[CrashPoint],
        *,
        resume: bool,
    ) -> Segment:
        if workflow.name not in self._targets:
            self.check(store, workflow)
        outcome = await run_child(
            self._targets[workflow.name],
            dsn=child_dsn(store),
            execution_id=execution_id,
            input_json=None if resume else encode_arguments(workflow.fn, args, kwargs),
            crash_at=pending[0] if pending else None,
            resume=resume,
            timeout=self.timeout,
        )
        positions = outcome.positions or (None,) * len(outcome.sites)
        segment = Segment(
            resume=resume,
            sites=[
                parse_point(point).site(execution_id, position)
                for point, position in zip(outcome.sites, positions, strict=True)
            ],
        )
        if outcome.fired:
            segment.crashed_at = pending.pop(0)
        elif outcome.status is not ChildStatus.COMPLETED:
            segment.error = ChildFailed(
                f"child {outcome.pid} {outcome.describe()}",
                error_type=outcome.error_type,
                status=outcome.status,
            )
        return segment
