"""Typed JSON: replayed results come back equal and of the same type."""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from waypoint import (
    ExecutionStatus,
    SerializationError,
    Store,
    Waypoint,
    _json,
    checkpoint,
    workflow,
)
from waypoint.hooks import CrashSite, SimulatedCrash, armed
from waypoint.journal import resumed_payload
from waypoint.serialization import arguments_hash, decode_arguments, encode_arguments


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Citation(pydantic.BaseModel):
    url: str
    score: float
    tags: list[str] = []


@dataclass
class Finding:
    title: str
    found_at: dt.datetime
    cost: Decimal


SAMPLES: dict[str, tuple[Any, Any]] = {
    "int": (int, 7),
    "str": (str, "héllo"),
    "none": (type(None), None),
    "float": (float, 0.1),
    "list": (list[int], [1, 2, 3]),
    "dict": (dict[str, list[int]], {"a": [1], "b": []}),
    "tuple": (tuple[int, str], (1, "x")),
    "set": (set[str], {"b", "a"}),
    "datetime": (dt.datetime, dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)),
    "date": (dt.date, dt.date(2026, 1, 31)),
    "uuid": (uuid.UUID, uuid.UUID("0190d6a2-7c4e-7abc-8def-0123456789ab")),
    "enum": (Colour, Colour.BLUE),
    "decimal": (Decimal, Decimal("19.99")),
    "model": (Citation, Citation(url="https://a.example", score=0.5, tags=["x"])),
    "dataclass": (
        Finding,
        Finding("t", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), Decimal("0.10")),
    ),
    "nested": (
        dict[str, list[Citation]],
        {"refs": [Citation(url="u", score=1.0)]},
    ),
    "optional": (Decimal | None, None),
}


def _typed_workflow(annotation: Any, value: Any) -> Any:
    seen: list[Any] = []

    async def produce() -> Any:
        return value

    produce.__annotations__["return"] = annotation
    step = checkpoint(name="produce")(produce)

    async def typed() -> str:
        result = await step()
        seen.append(result)
        return "done"

    typed.__qualname__ = f"typed_{id(annotation)}"
    return workflow(typed), seen


@contextmanager
def _crash_before_complete() -> Iterator[None]:
    def hook(site: CrashSite) -> None:
        if site.step is None:
            raise SimulatedCrash(site)

    with armed(hook):
        yield


@pytest.mark.parametrize("case", sorted(SAMPLES))
async def test_a_replayed_result_has_the_same_type_and_value(
    local_store: Store, case: str
) -> None:
    annotation, value = SAMPLES[case]
    wf, seen = _typed_workflow(annotation, value)
    async with Waypoint(local_store) as wp:
        with _crash_before_complete(), pytest.raises(SimulatedCrash):
            await wp.run(wf, execution_id=case)
    async with Waypoint(local_store) as wp:
        assert await wp.resume(case) == "done"

    original, replayed = seen
    assert replayed == value
    assert type(replayed) is type(original)
    if isinstance(value, Finding):
        assert type(replayed.cost) is Decimal


@checkpoint
async def untyped_tuple():  # type: ignore[no-untyped-def]
    return (1, 2)


@checkpoint
async def lying() -> int:
    return "not an int"  # type: ignore[return-value]


class Opaque:
    pass


@checkpoint
async def infinite() -> float:
    return float("inf")


@checkpoint
async def nan_inside() -> Citation:
    return Citation(url="u", score=float("nan"))


@checkpoint
async def opaque() -> Opaque:
    return Opaque()


@checkpoint
async def lone_surrogate() -> str:
    return "half a pair: \ud800"


after: list[str] = []


@workflow
async def storing(which: str) -> None:
    step = {
        "untyped": untyped_tuple,
        "lying": lying,
        "opaque": opaque,
        "infinite": infinite,
        "nan_inside": nan_inside,
        "lone_surrogate": lone_surrogate,
    }[which]
    await step()
    after.append("moved on")


@pytest.mark.parametrize(
    ("which", "names"),
    [
        ("untyped", ["untyped_tuple", "tuple", "Annotate it"]),
        ("lying", ["lying", "str", "int"]),
        ("opaque", ["opaque", "Opaque", "cannot store as JSON"]),
        # JSON has no inf or nan: stored, they would come back as null, and
        # the replay would fail (or, for an optional float, return None).
        ("infinite", ["infinite", "inf", "JSON"]),
        ("nan_inside", ["nan_inside", "Citation", "JSON"]),
        # A str of exactly its annotation takes a shorter path to JSON; what
        # cannot be encoded there is refused the same way.
        ("lone_surrogate", ["lone_surrogate", "str", "surrogate"]),
    ],
)
async def test_a_result_that_cannot_be_stored_is_refused_before_moving_on(
    local_store: Store, which: str, names: list[str]
) -> None:
    after.clear()
    async with Waypoint(local_store) as wp:
        with pytest.raises(SerializationError) as raised:
            await wp.run(storing, which, execution_id=which)
        execution = await wp.execution(which)

    for name in names:
        assert name in str(raised.value)
    assert after == []
    # Fixing the annotation and resuming is possible: the run is not failed.
    assert execution.status is ExecutionStatus.RUNNING


@workflow
async def with_models(citation: Citation, when: dt.date, *extra: int) -> str:
    return f"{citation.url} {when.isoformat()} {sum(extra)}"


async def test_workflow_input_is_rebuilt_with_its_annotations(
    local_store: Store,
) -> None:
    def hook(site: CrashSite) -> None:
        raise SimulatedCrash(site)

    citation = Citation(url="u", score=0.1)
    async with Waypoint(local_store) as wp:
        with armed(hook), pytest.raises(SimulatedCrash):
            await wp.run(with_models, citation, dt.date(2026, 2, 1), 1, 2)
        (execution,) = [e async for e in wp.executions()]
    async with Waypoint(local_store) as wp:
        out = await wp.resume(execution.execution_id)

    assert out == "u 2026-02-01 3"
    assert execution.input == {
        "citation": {"url": "u", "score": 0.1, "tags": []},
        "when": "2026-02-01",
        "extra": [1, 2],
    }


async def scalars(ratio: float, flag: bool, count: int, name: str, /) -> None:
    pass


@pytest.mark.parametrize(
    "args",
    [(2.5, True, 3, "x"), (2, False, 0, "")],
    ids=["as_given", "int_for_float"],
)
def test_arguments_rebuild_the_same_from_text_and_from_decoded_json(
    args: tuple[Any, ...],
) -> None:
    text = encode_arguments(scalars, args, {})
    from_text = decode_arguments(scalars, text)
    from_value = decode_arguments(scalars, json.loads(text))
    assert from_text == from_value == (tuple(args), {})
    # A float parameter stays a float even where JSON wrote an integer.
    assert [type(a) for a in from_value[0]] == [float, bool, int, str]


async def defaults(a: int, b: int = 2, /, c: int = 3) -> None:
    pass


async def keywords(a: int, *, b: int, c: int = 3) -> None:
    pass


async def variadic(a: int, *rest: int, **extra: int) -> None:
    pass


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "rebuilt"),
    [
        (defaults, (1,), {}, ((1,), {})),
        (defaults, (1, 5), {"c": 6}, ((1, 5, 6), {})),
        (defaults, (1,), {"c": 6}, ((1,), {"c": 6})),
        (keywords, (1,), {"b": 2}, ((1,), {"b": 2})),
        (variadic, (1, 2, 3), {"x": 4}, ((1, 2, 3), {"x": 4})),
    ],
    ids=["default_left_out", "all_given", "gap", "keyword_only", "variadic"],
)
def test_arguments_rebuild_for_every_kind_of_parameter(
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    rebuilt: tuple[tuple[Any, ...], dict[str, Any]],
) -> None:
    assert decode_arguments(fn, encode_arguments(fn, args, kwargs)) == rebuilt


def test_argument_hashes_do_not_depend_on_the_process() -> None:
    # Sets of strings iterate in a per-process order; the hash must not.
    assert arguments_hash(({"b", "a", "c"},), {}) == arguments_hash(
        ({"c", "a", "b"},), {}
    )
    assert arguments_hash((Opaque(),), {}) == arguments_hash((Opaque(),), {})
    assert arguments_hash((1,), {}) != arguments_hash((2,), {})
    assert arguments_hash((), {"k": 1}) != arguments_hash((1,), {})


def test_stored_results_are_plain_json() -> None:
    from waypoint.serialization import Codec

    text = Codec(Finding, "step").encode(
        Finding("t", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), Decimal("1.5"))
    )
    assert json.loads(text) == {
        "title": "t",
        "found_at": "2026-01-01T00:00:00Z",
        "cost": "1.5",
    }


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def _same_json(text: str) -> None:
    try:
        expected: Any = ("value", json.loads(text))
    except ValueError as exc:
        expected = ("raises", type(exc))
    try:
        got: Any = ("value", _json.loads(text))
    except ValueError as exc:
        got = ("raises", type(exc))
    # repr tells apart 1 and 1.0, and compares nan with nan.
    assert repr(got) == repr(expected)


@given(_json_values, st.booleans())
def test_journal_json_reads_every_document_as_json_loads_does(
    value: Any, ascii_only: bool
) -> None:
    _same_json(json.dumps(value, ensure_ascii=ascii_only))


@given(st.text(alphabet='0123456789.eE+-"\\[]{}:,nultrfasNIiy \t\n\ud800u'))
def test_journal_json_accepts_and_refuses_text_as_json_loads_does(
    text: str,
) -> None:
    _same_json(text)


@pytest.mark.parametrize("owner", ["host:1:ab.1", None, "host-\udce9:1:ab.1"])
def test_the_resumed_payload_reads_back_whatever_the_previous_owner(
    owner: str | None,
) -> None:
    # A host name decoded with surrogateescape can put a lone surrogate in an
    # owner id, which pydantic-core will not encode; json escapes it.
    assert json.loads(resumed_payload(owner)) == {"previous_owner": owner}
