"""One execution being driven: positions, replay from the journal, recording.

This is the hot path. A replayed step costs a dict lookup, a comparison and a
decode; a new step costs its body, one encode and one store write. The order
inside ``Run._step`` is the durability argument: the checkpoint is committed
*before* the result is handed back, so the workflow can never act on a result
that a crash could take away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from waypoint import _json
from waypoint.context import _current as _current_step
from waypoint.errors import NonDeterminismError, StepFailed
from waypoint.hooks import CrashPhase, CrashSite, active_hook
from waypoint.journal import Checkpoint, Claim, StepFailure
from waypoint.serialization import arguments_hash, encode_error, type_name

if TYPE_CHECKING:
    from waypoint.decorators import StepDef
    from waypoint.stores.base import Store

__all__ = ["Run"]

logger = logging.getLogger(__name__)

# Looked up at every step of an armed run, so module globals, not attributes.
BEFORE = CrashPhase.BEFORE
AFTER_EFFECT = CrashPhase.AFTER_EFFECT
AFTER_COMMIT = CrashPhase.AFTER_COMMIT
# Builds a CrashSite from a tuple without the named tuple's Python-level
# ``__new__``: an armed run builds three per step.
_site = tuple.__new__


class Run:
    """The state of one execution while a runtime drives it."""

    __slots__ = (
        "attempted",
        "checkpoints",
        "crash",
        "execution_id",
        "explain",
        "failures",
        "final_failures",
        "next_position",
        "occurrences",
        "owner",
        "store",
    )

    def __init__(
        self, store: Store, owner: str, execution_id: str, claim: Claim | None
    ) -> None:
        self.store = store
        self.owner = owner
        self.execution_id = execution_id
        self.next_position = 0
        self.occurrences: dict[str, int] = {}
        self.attempted: dict[int, tuple[str, str]] = {}
        self.checkpoints: dict[int, Checkpoint] = {}
        self.failures: dict[int, int] = {}
        self.final_failures: dict[int, StepFailure] = {}
        # Set when an in-process crash (a BaseException that is not an
        # Exception) passes through a step: the "process" is dead from then
        # on, so a sibling step still running under asyncio.gather must not
        # write anything more.
        self.crash: BaseException | None = None
        # Whether to log, at DEBUG, each step a resume runs rather than
        # replays: asked once per run, not at every step.
        self.explain = False
        if claim is None:
            return
        self.explain = bool(claim.checkpoints) and logger.isEnabledFor(logging.DEBUG)
        self.checkpoints = {cp.position: cp for cp in claim.checkpoints}
        for failure in claim.failures:
            if failure.final:
                self.final_failures[failure.position] = failure
            else:
                done = self.failures.get(failure.position, 0)
                self.failures[failure.position] = max(failure.attempt, done)

    def start_step(
        self, step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, Any]:
        """Reserve the next position for a call of ``step``; return its run.

        Called synchronously when the step is called, before its coroutine
        first runs, which is what makes positions follow call order.
        """
        position = self.next_position
        self.next_position = position + 1
        occurrence = self.occurrences.get(step.name, 0) + 1
        self.occurrences[step.name] = occurrence
        return self._step(step, position, occurrence, args, kwargs)

    async def _step(
        self,
        step: StepDef,
        position: int,
        occurrence: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            args_hash = arguments_hash(args, kwargs)
            self.attempted[position] = (step.name, args_hash)
            recorded = self.checkpoints.get(position)
            if recorded is not None:
                if recorded.step != step.name or recorded.args_hash != args_hash:
                    raise self._diverged(position, step.name, args_hash, recorded)
                return step.codec.decode(recorded.result)
            failed = self.final_failures.get(position)
            if failed is not None:
                if failed.step != step.name or failed.args_hash != args_hash:
                    raise self._diverged(position, step.name, args_hash, failed)
                raise _step_failed(self.execution_id, failed, _json.loads(failed.error))
            return await self._execute(
                step, position, occurrence, args, kwargs, args_hash
            )
        except BaseException as exc:
            if self.crash is None and not isinstance(exc, Exception):
                self.crash = exc
            raise

    async def _execute(
        self,
        step: StepDef,
        position: int,
        occurrence: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        args_hash: str,
    ) -> Any:
        codec = step.codec  # resolved before the body runs: bad annotations fail early
        if self.explain:
            logger.debug(
                "execution %s: step %r at position %d is not in the journal "
                "(%d recorded); running it",
                self.execution_id,
                step.name,
                position,
                len(self.checkpoints),
            )
        hook = active_hook()
        attempt = self.failures.get(position, 0) + 1
        name = step.name
        if hook is not None:
            hook(
                _site(
                    CrashSite,
                    (BEFORE, self.execution_id, name, occurrence, position, attempt),
                )
            )
        while True:
            started = time.time()
            token = _current_step.set((self.execution_id, position, step.name, attempt))
            try:
                result = await step.fn(*args, **kwargs)
            except Exception as exc:
                await self._record_failure(step, position, args_hash, attempt, exc)
                attempt += 1
                continue
            finally:
                _current_step.reset(token)
            break

        # The attempt that succeeded, for the two sites after the body.
        where = (self.execution_id, name, occurrence, position, attempt)
        if hook is not None:
            hook(_site(CrashSite, (AFTER_EFFECT, *where)))
        result_text = codec.encode(result)
        if self.crash is not None:
            raise self.crash
        await self.store.record_step(
            self.execution_id,
            self.owner,
            Checkpoint(
                position,
                step.name,
                args_hash,
                attempt,
                result_text,
                started,
                time.time(),
            ),
        )
        if hook is not None:
            hook(_site(CrashSite, (AFTER_COMMIT, *where)))
        return result

    async def _record_failure(
        self,
        step: StepDef,
        position: int,
        args_hash: str,
        attempt: int,
        exc: Exception,
    ) -> None:
        """Journal a failed attempt; raise StepFailed after the last one."""
        final = attempt > step.retries
        delay = None if final else step.backoff.delay(attempt)
        failure = StepFailure(
            position, step.name, args_hash, attempt, encode_error(exc), final, delay
        )
        if self.crash is not None:
            raise self.crash
        await self.store.record_failure(self.execution_id, self.owner, failure)
        if final:
            raise _step_failed(
                self.execution_id, failure, _json.loads(failure.error)
            ) from exc
        logger.warning(
            "execution %s: step %r (position %d) attempt %d failed with %s: %s; "
            "retrying in %.2fs",
            self.execution_id,
            step.name,
            position,
            attempt,
            type_name(exc),
            exc,
            delay,
        )
        await asyncio.sleep(delay or 0)

    def check_complete(self) -> None:
        """Raise if the workflow finished without reaching recorded steps."""
        reached = self.next_position
        unreached = [p for p in self.checkpoints if p >= reached]
        unreached += [p for p in self.final_failures if p >= reached]
        if not unreached:
            return
        unreached = sorted(set(unreached))
        first = unreached[0]
        entry = self.checkpoints.get(first) or self.final_failures[first]
        raise NonDeterminismError(
            f"execution {self.execution_id} finished after "
            f"{self.next_position} steps, but its journal records "
            f"{len(unreached)} more, from position {first} ({entry.step}): the "
            "workflow took another path than when it was recorded. Move "
            "randomness, clock reads and I/O into steps so that every run "
            "takes the same path",
            execution_id=self.execution_id,
            position=first,
            recorded=entry.step,
            attempted=None,
        )

    def _diverged(
        self,
        position: int,
        name: str,
        args_hash: str,
        recorded: Checkpoint | StepFailure,
    ) -> NonDeterminismError:
        return NonDeterminismError(
            self._divergence_table(position),
            execution_id=self.execution_id,
            position=position,
            recorded=f"{recorded.step} (args {recorded.args_hash})",
            attempted=f"{name} (args {args_hash})",
        )

    def _divergence_table(self, position: int) -> str:
        """Recorded versus attempted steps around ``position``."""
        lines = [
            f"execution {self.execution_id} diverged from its journal at "
            f"position {position}:",
            f"    {'pos':>5}  {'recorded':<40} attempted",
        ]
        for pos in range(max(0, position - 3), position + 2):
            entry = self.checkpoints.get(pos) or self.final_failures.get(pos)
            recorded = f"{entry.step} (args {entry.args_hash})" if entry else "-"
            now = self.attempted.get(pos)
            attempted = f"{now[0]} (args {now[1]})" if now else "-"
            mark = ">" if pos == position else " "
            lines.append(f"  {mark} {pos:>5}  {recorded:<40} {attempted}")
        lines.append(
            "A workflow must call the same steps, in the same order and with "
            "the same arguments, on every run: move randomness, clock reads "
            "and I/O into steps. To change the code of running executions, "
            "let them finish first, or start new executions."
        )
        return "\n".join(lines)


def _step_failed(
    execution_id: str, failure: StepFailure, error: dict[str, Any]
) -> StepFailed:
    return StepFailed(
        f"step {failure.step!r} (position {failure.position}) of execution "
        f"{execution_id} failed after {failure.attempt} attempt(s): "
        f"{error.get('type')}: {error.get('message')}",
        execution_id=execution_id,
        step=failure.step,
        position=failure.position,
        attempts=failure.attempt,
        error_type=error.get("type"),
        error_message=error.get("message"),
    )
