"""``fake_llm``: a scripted language model that counts calls and tokens.

It answers from a script (one reply for everything, a mapping from prompt
substrings to replies, a function of the prompt, or a list served in turn)
and counts each call and its tokens, per execution. The chaos harness reads
those counts to say how many calls a resume served from the journal instead
of the model.

Use a mapping or a function when exploring crashes: a list is served in turn
across every run, so a re-run gets a different reply from the first run.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pytest_waypoint.effects import running_step
from waypoint.decorators import _current_run
from waypoint.errors import ConfigurationError

__all__ = ["FakeLLM", "Usage", "usage"]

Script = str | Mapping[str, str] | Callable[[str], str] | Sequence[str] | None

_live: weakref.WeakSet[FakeLLM] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class Usage:
    calls: int = 0
    tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.calls + other.calls, self.tokens + other.tokens)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.calls - other.calls, self.tokens - other.tokens)


def usage(execution_id: str) -> Usage:
    """Model calls made for ``execution_id`` by every live ``FakeLLM``."""
    if not _live:
        # The harness asks before and after every segment; most workflows
        # use no model, and iterating an empty WeakSet still costs a guard.
        return _NO_USAGE
    total = Usage()
    for model in list(_live):
        total += Usage(
            model.calls_by_execution[execution_id],
            model.tokens_by_execution[execution_id],
        )
    return total


_NO_USAGE = Usage()


def count_tokens(text: str) -> int:
    """Whitespace-separated words: close enough to tokens for accounting."""
    return len(text.split())


class FakeLLM:
    """A model that replies from a script; see the module docstring."""

    def __init__(self, script: Script = None, *, model: str = "fake-llm") -> None:
        self.model = model
        self._script: Script = None
        self._turn = 0
        self.prompts: list[str] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.calls_by_execution: Counter[str] = Counter()
        self.tokens_by_execution: Counter[str] = Counter()
        self.script(script)
        _live.add(self)

    def __repr__(self) -> str:
        return f"<FakeLLM {self.model} calls={self.calls} tokens={self.tokens}>"

    @property
    def calls(self) -> int:
        return len(self.prompts)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def script(self, script: Script) -> FakeLLM:
        """Replace the script; returns the model, for chaining."""
        valid = script is None or isinstance(script, str | Mapping | Sequence)
        if not valid and not callable(script):
            raise ConfigurationError(
                f"a FakeLLM script is a reply, a mapping of prompt substrings "
                f"to replies, a function of the prompt or a list, not {script!r}"
            )
        self._script, self._turn = script, 0
        return self

    async def complete(self, prompt: str) -> str:
        """The scripted reply to ``prompt``, counted as one model call."""
        run = _current_run.get()
        if run is not None and run.crash is not None:
            raise run.crash  # a dead process makes no more calls
        reply = self._reply(prompt)
        tokens = count_tokens(prompt) + count_tokens(reply)
        self.prompts.append(prompt)
        self.prompt_tokens += count_tokens(prompt)
        self.completion_tokens += count_tokens(reply)
        step = running_step()
        execution_id = step.execution_id if step is not None else None
        if execution_id is None and run is not None:
            execution_id = run.execution_id
        if execution_id is not None:
            self.calls_by_execution[execution_id] += 1
            self.tokens_by_execution[execution_id] += tokens
        return reply

    def _reply(self, prompt: str) -> str:
        script = self._script
        if script is None:
            return f"fake reply to: {prompt}"
        if isinstance(script, str):
            return script
        if isinstance(script, Mapping):
            for needle, reply in script.items():
                if needle in prompt:
                    return reply
            raise LookupError(
                f"the FakeLLM script has no reply for {prompt!r}; its prompts "
                f"contain one of {sorted(script)}"
            )
        if callable(script):
            return script(prompt)
        if not script:
            raise LookupError("the FakeLLM script is an empty list")
        reply = script[self._turn % len(script)]
        self._turn += 1
        return reply
