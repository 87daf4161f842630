"""Typed JSON: how step results, workflow inputs and outputs are stored.

A value is stored as JSON and rebuilt from the annotation of the function that
produced it, so a replayed result has the same type and value as the original:
pydantic models, dataclasses, ``datetime``, ``UUID``, ``Enum``, ``Decimal`` and
containers of them. pydantic does the typed part. With no annotation (or
``Any``) only JSON's own types are accepted, because nothing else could be
rebuilt faithfully; anything else is refused at once with a message that says
which annotation to add. There is no pickle anywhere.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import inspect
import json
import math
import sys
import typing
from collections.abc import Callable
from typing import Any

import pydantic
import pydantic_core

from waypoint import _json
from waypoint.errors import SerializationError, WaypointError

__all__ = [
    "Codec",
    "arguments_hash",
    "decode_arguments",
    "encode_arguments",
    "encode_error",
    "rebuild_error",
    "return_codec",
    "type_name",
]

_PLAIN_SCALARS = (str, int, float, bool, type(None))

#: Annotations a value of exactly that type cannot mismatch, having nothing
#: nested: encoding one skips pydantic's checking mode, which costs ten times
#: the encoding itself (a failed bool conversion of the "error" argument).
_SCALAR_ANNOTATIONS = (str, int, float, bool)


def type_name(value_or_type: Any) -> str:
    cls = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _annotation_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return type_name(annotation)
    return repr(annotation).replace("typing.", "")


def _plain_problem(value: Any, path: str) -> str | None:
    """Where ``value`` holds something JSON cannot round-trip, or None."""
    if isinstance(value, _PLAIN_SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            return f"{path} is {value!r}, which JSON cannot hold"
        return None
    if type(value) is list:
        for index, item in enumerate(value):
            problem = _plain_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{path} has the key {key!r}, and JSON keys are strings"
            problem = _plain_problem(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{path} is a {type_name(value)}"


class Codec:
    """Encodes values of one annotation to JSON text and rebuilds them."""

    __slots__ = ("_adapter", "_scalar", "annotation", "owner")

    def __init__(self, annotation: Any, owner: str) -> None:
        self.annotation = annotation
        self.owner = owner
        self._adapter: pydantic.TypeAdapter[Any] | None = None
        self._scalar: type | None = next(
            (kind for kind in _SCALAR_ANNOTATIONS if annotation is kind), None
        )
        if annotation is not Any and annotation is not inspect.Parameter.empty:
            try:
                self._adapter = pydantic.TypeAdapter(annotation)
            except pydantic.PydanticSchemaGenerationError as exc:
                raise SerializationError(
                    f"{owner} is annotated {_annotation_name(annotation)}, "
                    "which Waypoint cannot store as JSON; annotate it with a "
                    "pydantic model, a dataclass or builtin types instead",
                    step=owner,
                    type_name=_annotation_name(annotation),
                ) from exc

    def encode(self, value: Any) -> str:
        if self._adapter is None:
            problem = _plain_problem(value, "the value")
            if problem:
                raise SerializationError(
                    f"{self.owner} returned {type_name(value)} and has no type "
                    f"annotation to rebuild it from: {problem}. Annotate it "
                    "(for example '-> MyModel' or '-> tuple[int, str]') so "
                    "that a replay returns the same type",
                    step=self.owner,
                    type_name=type_name(value),
                )
            return json.dumps(value, separators=(",", ":"))
        scalar = type(value) is self._scalar
        if scalar and isinstance(value, float) and not math.isfinite(value):
            raise self._not_json(value, "JSON has no inf or nan")
        try:
            if scalar:
                # Exactly the annotated type: nothing to check, and asking
                # pydantic to check costs ten times the encoding.
                return self._adapter.serializer.to_json(value).decode()
            text = self._adapter.serializer.to_json(value, warnings="error")
        except (pydantic_core.PydanticSerializationError, ValueError) as exc:
            raise SerializationError(
                f"{self.owner}: a {type_name(value)} cannot be stored as "
                f"{_annotation_name(self.annotation)}: {exc}",
                step=self.owner,
                type_name=type_name(value),
            ) from exc
        if b"null" in text:
            # pydantic writes an inf or nan float as null, which the replay
            # then cannot read back; find out now, not on the resume.
            try:
                self._adapter.validator.validate_json(text)
            except pydantic.ValidationError as exc:
                raise self._not_json(value, f"{exc}") from exc
        return text.decode()

    def _not_json(self, value: Any, problem: str) -> SerializationError:
        return SerializationError(
            f"{self.owner}: a {type_name(value)} cannot be stored as "
            f"{_annotation_name(self.annotation)}: it would not read back "
            f"from JSON ({problem}). JSON has no inf or nan: return a finite "
            "float, or None under an optional annotation",
            step=self.owner,
            type_name=type_name(value),
        )

    def decode_value(self, value: Any) -> Any:
        """Rebuild from the object JSON text decodes to."""
        if type(value) is self._scalar:
            return value  # what validating its JSON would give back
        return self.decode(json.dumps(value))

    def decode(self, text: str) -> Any:
        if self._adapter is None:
            return _json.loads(text)
        try:
            return self._adapter.validator.validate_json(text)
        except pydantic.ValidationError as exc:
            raise SerializationError(
                f"the recorded value of {self.owner} no longer fits its "
                f"annotation {_annotation_name(self.annotation)} (did the code "
                f"change since it was recorded?): {exc}",
                step=self.owner,
                type_name=_annotation_name(self.annotation),
            ) from exc


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise SerializationError(
            f"the annotations of {fn.__qualname__} cannot be resolved ({exc}); "
            "make every name they use importable from its module",
            step=fn.__qualname__,
        ) from exc


def return_codec(fn: Callable[..., Any], owner: str) -> Codec:
    return Codec(_hints(fn).get("return", Any), owner)


# Arguments ---------------------------------------------------------------


def _hash_fallback(value: Any) -> Any:
    # An object with no JSON form hashes as its type: its identity (and so
    # its repr) differs between processes, its type does not.
    return f"<{type_name(value)}>"


def _canonical(value: Any) -> Any:
    """``value`` with every set turned into a sorted list.

    A set of strings iterates in an order that changes from process to
    process (hash randomisation), so it would hash differently on replay.
    """
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return value
    if kind is set or kind is frozenset:
        items = [_canonical(item) for item in value]
        return sorted(items, key=lambda item: pydantic_core.to_json(item))
    if kind is list or kind is tuple:
        return [_canonical(item) for item in value]
    if kind is dict:
        return {key: _canonical(item) for key, item in value.items()}
    return value


def arguments_hash(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A short, process-independent digest of a step's arguments."""
    for arg in args:
        if type(arg) not in _PLAIN_SCALARS:
            args = _canonical(args)
            break
    if kwargs:
        kwargs = _canonical(kwargs)
    text = pydantic_core.to_json((args, kwargs), fallback=_hash_fallback)
    digest = _ARGUMENTS_DIGEST.copy()
    digest.update(text)
    return digest.hexdigest()


#: An empty 8-byte BLAKE2b, copied for each hash: a copy costs less than
#: parsing the constructor's keyword arguments at every step.
_ARGUMENTS_DIGEST = hashlib.blake2b(digest_size=8)


@functools.cache
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


@functools.cache
def _parameter_codecs(fn: Callable[..., Any]) -> dict[str, Codec]:
    hints = _hints(fn)
    codecs = {}
    for param in _signature(fn).parameters.values():
        annotation = hints.get(param.name, Any)
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            annotation = tuple[annotation, ...]  # type: ignore[valid-type]
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            annotation = dict[str, annotation]  # type: ignore[valid-type]
        codecs[param.name] = Codec(
            annotation, f"argument {param.name!r} of workflow {fn.__qualname__}"
        )
    return codecs


def encode_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    """The workflow's input, bound to its signature, as JSON text."""
    try:
        bound = _signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{fn.__qualname__}() {exc}") from None
    codecs = _parameter_codecs(fn)
    parts = [
        f"{json.dumps(name)}:{codecs[name].encode(value)}"
        for name, value in bound.arguments.items()
    ]
    return "{" + ",".join(parts) + "}"


def decode_arguments(
    fn: Callable[..., Any], input: str | dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Rebuild ``(args, kwargs)`` from ``encode_arguments``' JSON.

    ``input`` is the JSON text, or the object it decodes to (as
    ``Execution.input`` holds it).
    """
    codecs = _parameter_codecs(fn)
    raw = _json.loads(input) if isinstance(input, str) else input
    arguments = {name: codecs[name].decode_value(value) for name, value in raw.items()}
    names = _positional_names(fn)
    if names is not None and len(arguments) == len(names):
        # Every parameter was given and each can be passed by position: what
        # BoundArguments would work out, without its walk of the signature.
        return tuple(arguments[name] for name in names), {}
    bound = inspect.BoundArguments(_signature(fn), arguments)
    return bound.args, bound.kwargs


@functools.cache
def _positional_names(fn: Callable[..., Any]) -> tuple[str, ...] | None:
    """The names of ``fn``'s parameters, if each can be passed by position."""
    parameters = _signature(fn).parameters.values()
    by_position = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )
    if all(p.kind in by_position for p in parameters):
        return tuple(p.name for p in parameters)
    return None


# Errors ------------------------------------------------------------------

_ERROR_FACTS = ("step", "position", "attempts", "error_type", "error_message")


def encode_error(exc: BaseException) -> str:
    """An exception as JSON: its type, message and Waypoint facts."""
    record: dict[str, Any] = {"type": type_name(exc), "message": str(exc)}
    if isinstance(exc, WaypointError):
        for fact in _ERROR_FACTS:
            value = getattr(exc, fact, None)
            if isinstance(value, _PLAIN_SCALARS) and value is not None:
                record[fact] = value
    return json.dumps(record)


def rebuild_error(record: dict[str, Any], execution_id: str) -> BaseException:
    """The exception a recorded failure raises again on resume.

    The recorded type is rebuilt when its module is already imported (nothing
    is imported on the word of a database row) and it takes a message;
    otherwise ``WorkflowFailed`` carries the recorded type and message.
    """
    from waypoint.errors import WorkflowFailed

    type_path = str(record.get("type", ""))
    message = str(record.get("message", ""))
    module_name, _, qualname = type_path.rpartition(".")
    module = sys.modules.get(module_name or "builtins", builtins)
    cls: Any = module
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        facts = {k: v for k, v in record.items() if k in _ERROR_FACTS}
        try:
            if issubclass(cls, WaypointError):
                return cls(message, execution_id=execution_id, **facts)
            exc = cls(message)
        except Exception:
            pass
        else:
            if str(exc) == message:
                return exc
    return WorkflowFailed(
        f"execution {execution_id} failed with {type_path}: {message}",
        execution_id=execution_id,
        error_type=type_path,
        error_message=message,
    )
