"""The effect ledger: side effects a test can count, kept in the journal's store.

A step stands in for a call to an external API with
``await effects.apply("charge card")``. The ledger behaves like an API that
honours idempotency keys: a request carrying a key it has seen is dropped,
so a step that re-runs after a crash (same ``current_step().idempotency_key``)
takes effect once. A request made without a key (``key=None``), or with a
key that changes between runs, takes effect every time, which is the bug the
chaos harness reports as a duplicate effect.

The ledger lives in the store's database, not in this process, so it
survives crashes and is shared with child processes that resume the run.
"""

from __future__ import annotations

import uuid
from collections import Counter

from waypoint.context import StepContext, current_step
from waypoint.context import _current as _current_step
from waypoint.decorators import _current_run
from waypoint.errors import ConfigurationError
from waypoint.stores.base import Store

__all__ = ["DEFAULT_KEY", "Effects", "apply", "tally"]

#: The ledger key is ``execution|idempotency key|effect``; neither an
#: execution id nor an idempotency key contains the separator.
_SEP = "|"

#: A request without an idempotency key gets a key no other request has.
_NO_KEY = "~"

#: Outside any workflow run, effects are filed under this execution.
_NO_EXECUTION = "-"


class _DefaultKey:
    def __repr__(self) -> str:
        return "DEFAULT_KEY"


#: ``key=DEFAULT_KEY`` (the default) means the running step's idempotency key.
DEFAULT_KEY = _DefaultKey()


async def apply(
    effect: str,
    detail: str = "",
    *,
    key: str | _DefaultKey | None = DEFAULT_KEY,
    store: Store | None = None,
) -> bool:
    """Make the side effect ``effect``; True if it took effect, False if the
    "API" dropped it as a repeat of a request with the same key.

    Inside a step the key defaults to the step's idempotency key; in workflow
    code outside any step there is none, so every call takes effect. The
    effect goes to the store of the workflow run that makes it, or to
    ``store`` outside a run.
    """
    if not isinstance(effect, str) or not effect or _SEP in effect:
        raise ConfigurationError(
            f"an effect is a non-empty name without {_SEP!r}, not {effect!r}"
        )
    run = _current_run.get()
    if run is not None and run.crash is not None:
        # The process is dead from the journal's point of view: an orphaned
        # sibling task must not reach the outside world.
        raise run.crash
    if run is not None:
        store = run.store
    if store is None:
        raise ConfigurationError(
            f"effect {effect!r} was applied outside a workflow run and without "
            "a store: use the effects fixture, or pass store="
        )
    execution_id = run.execution_id if run is not None else _NO_EXECUTION
    token = _request_key(key)
    count = await store.record_effect(
        _SEP.join((execution_id, token, effect)),
        execution_id=None if run is None else execution_id,
        detail=detail,
    )
    return count == 1


def running_step() -> StepContext | None:
    """The running step's context, or None outside a step."""
    return None if _current_step.get() is None else current_step()


def _request_key(key: str | _DefaultKey | None) -> str:
    if isinstance(key, _DefaultKey):
        step = running_step()
        key = None if step is None else step.idempotency_key
    if key is None:
        return _NO_KEY + uuid.uuid4().hex
    if not isinstance(key, str) or not key or _SEP in key:
        raise ConfigurationError(
            f"an idempotency key is a non-empty string without {_SEP!r}, not {key!r}"
        )
    return key


def tally(counts: dict[str, int], *, sends: bool = False) -> dict[str, int]:
    """Ledger rows -> effect name -> times it took effect (or was sent)."""
    result: Counter[str] = Counter()
    for ledger_key, n in counts.items():
        parts = ledger_key.split(_SEP, 2)
        if len(parts) == 3:
            result[parts[2]] += n if sends else 1
    return dict(result)


async def execution_effects(store: Store, execution_id: str) -> dict[str, int]:
    """Effect name -> times it took effect in one execution."""
    return tally(await store.effect_counts(prefix=execution_id + _SEP))


class Effects:
    """The ``effects`` fixture: apply and count effects in the test's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"<Effects in {self.store.dsn}>"

    async def apply(
        self,
        effect: str,
        detail: str = "",
        *,
        key: str | _DefaultKey | None = DEFAULT_KEY,
    ) -> bool:
        """See ``pytest_waypoint.effects.apply``."""
        return await apply(effect, detail, key=key, store=self.store)

    async def counts(self, execution_id: str | None = None) -> dict[str, int]:
        """Effect name -> times it took effect, in one execution or in all."""
        prefix = "" if execution_id is None else execution_id + _SEP
        return tally(await self.store.effect_counts(prefix=prefix))

    async def sends(self, execution_id: str | None = None) -> dict[str, int]:
        """Effect name -> requests made, counting those dropped as repeats."""
        prefix = "" if execution_id is None else execution_id + _SEP
        return tally(await self.store.effect_counts(prefix=prefix), sends=True)
