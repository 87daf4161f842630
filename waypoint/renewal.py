"""Lease renewal: one timer per event loop, for every open runtime on it.

A runtime renews the leases of the executions it runs every third of a
lease, so that two missed renewals in a row still leave a lease alive. Each
open runtime joins its loop's ``LeaseKeeper``, which keeps a single timer for
all of them, due at the earliest renewal any member needs. Opening a runtime
then costs a dict insertion rather than a handle in the loop's timer heap,
which matters to a chaos exploration: it opens two runtimes per scenario, and
cancelled handles stay in the heap until the loop next turns.

Only the loop holds a keeper (through its pending timer, and the registry's
weak key), and a keeper holds neither its loop nor its timer, so a closed loop
is collected with its keeper.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from typing import Protocol

__all__ = ["LeaseKeeper", "Renewing", "keeper_for"]

logger = logging.getLogger(__name__)


class Renewing(Protocol):
    """What the keeper asks of a runtime."""

    @property
    def renewal_period(self) -> float:
        """Seconds between two renewals of this runtime's leases."""

    def renewal_due(self) -> None:
        """Renew the leases now (without waiting for the store)."""


class LeaseKeeper:
    """Calls ``renewal_due`` on each member once per its renewal period."""

    __slots__ = ("__weakref__", "_members", "_next")

    def __init__(self) -> None:
        # Each member, and the loop time its next renewal is due. Weakly: a
        # runtime dropped without being closed must not be kept alive here,
        # with its connections and, through them, its loop. A runtime that
        # runs executions is held by the coroutines that drive them.
        self._members: weakref.WeakKeyDictionary[Renewing, float] = (
            weakref.WeakKeyDictionary()
        )
        # When the pending tick fires; None when no tick is pending.
        self._next: float | None = None

    def join(self, member: Renewing, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + member.renewal_period
        self._members[member] = due
        if self._next is None or due < self._next:
            self._schedule(loop, due)

    def leave(self, member: Renewing) -> None:
        # The pending tick stays: when it fires with no member due it does
        # nothing, which is cheaper than cancelling and rescheduling a timer
        # for every runtime that comes and goes in between.
        self._members.pop(member, None)

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._next = when
        # In a context of its own: the tick (and the renewals it starts) must
        # not inherit the context variables of whichever runtime happened to
        # schedule it, such as an armed crash hook, nor keep them alive.
        loop.call_at(when, self._tick, loop, when, context=contextvars.Context())

    def _tick(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if when != self._next:
            return  # superseded: an earlier tick was scheduled after this one
        self._next = None
        try:
            for member, due in list(self._members.items()):
                if due <= when:
                    self._members[member] = when + member.renewal_period
                    self._renew(member)
        finally:
            if self._members:
                self._schedule(loop, min(self._members.values()))

    @staticmethod
    def _renew(member: Renewing) -> None:
        # One member's failure must not stop the renewals of the others,
        # whose leases would then expire under their running executions.
        try:
            member.renewal_due()
        except Exception:
            logger.exception(
                "lease renewal of %r failed to start; its leases may expire. "
                "This is a bug in Waypoint: please report it",
                member,
            )


_keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LeaseKeeper] = (
    weakref.WeakKeyDictionary()
)


def keeper_for(loop: asyncio.AbstractEventLoop) -> LeaseKeeper:
    """The keeper of ``loop``'s runtimes (made on first use).

    A loop that cannot be weakly referenced gets a keeper per call, which is
    a timer per runtime, as correct and only slower.
    """
    try:
        keeper = _keepers.get(loop)
        if keeper is None:
            keeper = _keepers[loop] = LeaseKeeper()
    except TypeError:
        keeper = LeaseKeeper()
    return keeper
