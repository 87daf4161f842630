"""Reading JSON text: the answers of ``json.loads``, at a tenth of its cost.

Every execution a store loads, every journal a harness checks and every
unannotated result a replay returns passes through here. These are mostly
documents of a few bytes, on which ``json.loads`` spends its time in its
Python wrapper rather than in parsing. pydantic-core's parser (a dependency
already, through pydantic) returns the same values for every document it
accepts. The few documents it refuses that ``json.loads`` takes, such as a
lone surrogate, go on to ``json.loads``, so what is accepted and what
is raised stay as they were.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core

__all__ = ["loads"]


def loads(text: str | bytes) -> Any:
    """The value of the JSON document ``text``, as ``json.loads`` gives it."""
    try:
        return pydantic_core.from_json(text)
    except (ValueError, TypeError):
        # TypeError: text that is not UTF-8 (a lone surrogate in a str).
        return json.loads(text)
