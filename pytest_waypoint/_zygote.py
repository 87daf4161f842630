"""The zygote of kill mode: a warm process that forks one child per run.

Started by ``pytest_waypoint.kill`` as ``python -m pytest_waypoint._zygote``
with one end of a Unix socket as its stdin. It imports Waypoint and pydantic
once; then, per request, it imports the workflow's module and forks a child
that runs ``pytest_waypoint._child`` as a fresh process would. A child so
starts in a few milliseconds rather than a few hundred.

A request is a length-prefixed JSON object sent with four descriptors that
the parent made for that child: the read end of its control pipe (its
stdin), the write ends of its report pipe and of its log (its stdout and
stderr), and the write end of a status pipe that only the zygote holds. On
the status pipe the zygote writes ``{"pid": N}`` once the child is forked, and
``{"returncode": N}`` once it has reaped the child: the parent returns an
outcome only after that line, because a zombie still counts as alive to the
runtime's lease check. Instead of a pid it may write ``{"refused": KIND}``:
``stale`` (the module's file changed since this zygote started, so its
imported copy may be old), ``unsafe`` (importing the module left a descriptor
open or started a thread, which a fork would share with every child) or
``broken`` (the warm-up failed); the parent then starts its child another way.

A workflow module is imported once per zygote, not once per child: its
import-time code runs with the first request's directory and environment,
and later children inherit what it did, as forked processes do.

The zygote holds no database connection and no event loop: it never opens a
store, and it checks before each fork that no descriptor or thread appeared
beyond its own. When the parent goes away the socket reaches end of file and
the zygote kills and reaps any child still running, then exits.

This module is the zygote's ``__main__``; the parent imports only its
protocol's constants.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from typing import Any, NoReturn

#: The length of a request, ahead of its JSON body.
HEADER = struct.Struct("!I")

#: Control, report, log and status, in that order.
FDS_PER_REQUEST = 4

#: Where this process lists its open descriptors, if the system shows them.
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


class _Refused(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def _send(fd: int, **message: Any) -> None:
    # The parent may have given up on this child and closed its end.
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(message).encode() + b"\n")


def _open_fds() -> set[int] | None:
    for directory in _FD_DIRS:
        try:
            listed = {int(name) for name in os.listdir(directory)}
        except (OSError, ValueError):
            continue
        # The listing's own descriptor is closed by now; fstat tells.
        return {fd for fd in listed if _is_open(fd)}
    return None


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _warm_up() -> None:
    # What every child imports; a store's driver is imported, never opened.
    for name in (
        "pydantic.type_adapter",
        "pytest_waypoint._child",
        "pytest_waypoint.effects",
        "pytest_waypoint.schedule",
        "waypoint",
        "waypoint.hooks",
        "waypoint.serialization",
        "waypoint.stores.sqlite",
    ):
        importlib.import_module(name)
    with contextlib.suppress(ImportError):
        importlib.import_module("waypoint.stores.postgres")
    from pydantic import TypeAdapter

    # The first adapter looks up pydantic's plugins among every installed
    # distribution's entry points, which is most of a cold child's run.
    TypeAdapter(int).validate_python(0)


class Zygote:
    """The zygote's state: its socket, its children and their status pipes."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.started_ns = time.time_ns()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.children: dict[int, int] = {}  # pid -> its status pipe
        self.received: list[int] = []  # the request in hand
        self.broken: str | None = None
        self.path_set = False

    def own_fds(self) -> set[int]:
        return {
            0,
            1,
            2,
            self.control.fileno(),
            self.wake_r,
            self.wake_w,
            *self.children.values(),
            *self.received,
        }

    def start(self) -> None:
        try:
            _warm_up()
        except BaseException:
            self.broken = "the warm-up failed:\n" + traceback.format_exc()
        unsafe = self.leftovers()
        if unsafe is not None and self.broken is None:
            self.broken = f"the warm-up {unsafe}"
        # A handler (not SIG_IGN, which would reap children unseen) so that
        # SIGCHLD wakes the poll through the wakeup pipe.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        # Ctrl-C reaches the whole process group; the parent decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def serve(self) -> None:
        poll = select.poll()
        poll.register(self.control, select.POLLIN)
        poll.register(self.wake_r, select.POLLIN)
        while True:
            for fd, _ in poll.poll():
                if fd == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                    self.reap()
                    continue
                received = self.receive()
                if received is None:
                    return
                self.handle(*received)

    def receive(self) -> tuple[dict[str, Any], list[int]] | None:
        head, fds, _, _ = socket.recv_fds(self.control, HEADER.size, FDS_PER_REQUEST)
        body = b""
        try:
            head += self._exactly(HEADER.size - len(head)) if head else b""
            if len(head) == HEADER.size:
                body = self._exactly(HEADER.unpack(head)[0])
        except OSError:
            body = b""
        if not body:
            for fd in fds:
                os.close(fd)
            return None
        request: dict[str, Any] = json.loads(body)
        return request, fds

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.control.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def handle(self, request: dict[str, Any], fds: list[int]) -> None:
        if len(fds) != FDS_PER_REQUEST:
            # Not from kill.py; closing the descriptors is the only answer.
            for fd in fds:
                os.close(fd)
            return
        self.received = fds
        try:
            self.prepare(request)
        except _Refused as refused:
            _send(fds[3], refused=refused.kind, reason=str(refused))
            for fd in fds:
                os.close(fd)
            return
        finally:
            self.received = []
        self.fork(request, fds)

    def prepare(self, request: dict[str, Any]) -> None:
        if self.broken is not None:
            raise _Refused("broken", self.broken)
        if not self.path_set:
            # The parent keeps one zygote per sys.path, so this holds for all.
            for entry in reversed(request["sys_path"]):
                if entry not in sys.path:
                    sys.path.insert(0, entry)
            self.path_set = True
        module_name = request["target"].partition(":")[0]
        module = sys.modules.get(module_name)
        if module is not None:
            self.check_fresh(module_name, getattr(module, "__file__", None))
            return
        # The module's import-time code runs once, here, and sees what the
        # first child would have seen: later children inherit what it did.
        _enter(request)
        with contextlib.suppress(BaseException):
            # A module that fails here fails again in the child, which puts
            # the traceback in its log as a spawned child would.
            importlib.import_module(module_name)
        unsafe = self.leftovers()
        if unsafe is not None:
            self.broken = f"importing {module_name} {unsafe}"
            raise _Refused("unsafe", self.broken)

    def check_fresh(self, module_name: str, path: str | None) -> None:
        if path is None:
            return
        try:
            changed = os.stat(path).st_mtime_ns >= self.started_ns
        except OSError:
            changed = True
        if changed:
            raise _Refused("stale", f"{module_name} ({path}) changed since start-up")

    def leftovers(self) -> str | None:
        """What a fork would share that it must not, or None."""
        if threading.active_count() > 1:
            return "started a thread"
        listed = _open_fds()
        extra = set() if listed is None else listed - self.own_fds()
        if extra:
            # A database connection or an event loop holds a descriptor.
            return f"left descriptors {sorted(extra)} open"
        return None

    def fork(self, request: dict[str, Any], fds: list[int]) -> None:
        control_r, report_w, log_w, status_w = fds
        # Anything buffered here would be written again by the child.
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.become_child(request, control_r, report_w, log_w, status_w)
        for fd in (control_r, report_w, log_w):
            os.close(fd)
        self.children[pid] = status_w
        _send(status_w, pid=pid)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            status_w = self.children.pop(pid, None)
            if status_w is not None:
                _send(status_w, returncode=os.waitstatus_to_exitcode(status))
                os.close(status_w)

    def shutdown(self) -> None:
        """The parent is gone: nobody will kill or read these children."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            os.close(self.children.pop(pid))

    def become_child(
        self,
        request: dict[str, Any],
        control_r: int,
        report_w: int,
        log_w: int,
        status_w: int,
    ) -> NoReturn:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            # The zygote's descriptors, closed through their owners so that no
            # stale object closes a number the child reuses later.
            self.control.close()
            for fd in (self.wake_r, self.wake_w, status_w, *self.children.values()):
                os.close(fd)
            os.dup2(control_r, 0)
            os.dup2(log_w, 1)
            os.dup2(log_w, 2)
            os.close(control_r)
            os.close(log_w)
            _enter(request)

            from pytest_waypoint import _child

            _child.serve(request, os.fdopen(report_w, "wb"), sys.stdin.buffer)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            _leave(code)


def _enter(request: dict[str, Any]) -> None:
    """Take the parent's directory and environment as of ``request``."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # As the child sets it before it imports the workflow (see _child).
    os.environ["WAYPOINT_DSN"] = request["dsn"]


def _leave(code: int) -> NoReturn:
    # What interpreter shutdown would do for the child, without unwinding
    # into the zygote's frames.
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> None:
    control = socket.socket(fileno=os.dup(0))
    # Children get their own stdin; the socket stays with the zygote alone.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    zygote = Zygote(control)
    zygote.start()
    try:
        zygote.serve()
    finally:
        zygote.shutdown()


if __name__ == "__main__":
    main()
