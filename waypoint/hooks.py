"""Crash points: one named hook at each durability boundary of the runtime.

The hooks are inert unless a harness arms them with ``armed(hook)``; an armed
hook is called with a ``CrashSite`` at each boundary and may raise
``SimulatedCrash`` (an in-process crash) or stop the process (kill mode). The
phases are the crash model of the design:

``before``           the step is entered, its body has not started
``after_effect``     the body returned (side effects done), nothing committed
``after_commit``     the checkpoint is committed, the caller has no result yet
``before_complete``  every step is done, the execution is not marked complete
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import NamedTuple

__all__ = [
    "CrashHook",
    "CrashPhase",
    "CrashSite",
    "SimulatedCrash",
    "WriteCut",
    "WriteFault",
    "active_hook",
    "active_write_fault",
    "armed",
    "armed_write_fault",
]


class CrashPhase(enum.StrEnum):
    BEFORE = "before"
    AFTER_EFFECT = "after_effect"
    AFTER_COMMIT = "after_commit"
    BEFORE_COMPLETE = "before_complete"


STEP_PHASES = (CrashPhase.BEFORE, CrashPhase.AFTER_EFFECT, CrashPhase.AFTER_COMMIT)


class CrashSite(NamedTuple):
    """Where a run stands when a hook is called.

    ``step`` and ``occurrence`` (1 for the first call of that step name in the
    execution) are None at ``before_complete``. A named tuple, because an
    armed hook sees three of these per step and a chaos run arms it for every
    scenario.
    """

    phase: CrashPhase
    execution_id: str
    step: str | None = None
    occurrence: int | None = None
    position: int | None = None
    attempt: int | None = None

    @property
    def point(self) -> str:
        """The crash point as the harness writes it: ``name#k@phase``."""
        if self.step is None:
            return f"@{self.phase.value}"
        return f"{self.step}#{self.occurrence}@{self.phase.value}"


class SimulatedCrash(BaseException):
    """An in-process crash injected at a crash point.

    It derives from BaseException so that ``except Exception`` in user code
    cannot swallow it, and the runtime never records it as a failure: to the
    journal it looks exactly like the process dying at that instant.
    """

    def __init__(self, site: CrashSite) -> None:
        super().__init__(f"simulated crash at {site.point} of {site.execution_id}")
        self.site = site


CrashHook = Callable[[CrashSite], None]

_hook: ContextVar[CrashHook | None] = ContextVar("waypoint_crash_hook", default=None)


def active_hook() -> CrashHook | None:
    return _hook.get()


class armed:
    """Arm ``hook`` for runs started in this context (tasks inherit it).

    A class rather than a ``@contextmanager`` generator: the chaos harness
    arms a hook for every segment of every scenario, and most of them end
    in a simulated crash, which a generator would have to be thrown into.
    """

    __slots__ = ("_hook", "_token")

    def __init__(self, hook: CrashHook) -> None:
        self._hook = hook
        self._token: Token[CrashHook | None] | None = None

    def __enter__(self) -> None:
        if self._token is not None:
            raise RuntimeError(
                "armed(...) is already entered: use a new armed(hook) to nest"
            )
        self._token = _hook.set(self._hook)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _hook.reset(self._token)
        self._token = None


# Database faults -----------------------------------------------------------
#
# A store that talks to a server over a connection (PostgreSQL) asks the armed
# write fault, once per checkpoint write, whether to cut its connection at the
# commit: before the statement reaches the server (the checkpoint is absent)
# or after the server committed it but before the reply arrives (the
# checkpoint is present and the writer does not know). The store cuts its
# own connection on the server side, so the failure the runtime sees is the
# real one.


class WriteCut(enum.StrEnum):
    BEFORE_COMMIT = "before_commit"
    AFTER_COMMIT = "after_commit"


#: Called with (execution_id, position, step name); returns where to cut the
#: connection for this write, or None to let it through.
WriteFault = Callable[[str, int, str], WriteCut | None]

_write_fault: ContextVar[WriteFault | None] = ContextVar(
    "waypoint_write_fault", default=None
)


def active_write_fault() -> WriteFault | None:
    return _write_fault.get()


@contextmanager
def armed_write_fault(fault: WriteFault) -> Iterator[None]:
    """Arm ``fault`` for checkpoint writes made in this context."""
    token = _write_fault.set(fault)
    try:
        yield
    finally:
        _write_fault.reset(token)
