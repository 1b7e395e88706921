"""How values are recorded: a codec turns a step's result into bytes and back.

Errors are always pickled (with their type, so a resumed run re-raises the
same type); one that does not pickle is recorded as a :class:`RecordedError`
that names its type and message.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

from cohort.durable._store import DurableError

__all__ = ["Codec", "JsonCodec", "PickleCodec", "RecordedError", "decode_error", "encode_error"]


@runtime_checkable
class Codec(Protocol):
    """Turns a step's value into bytes (``encode``) and back (``decode``)."""

    def encode(self, value: Any) -> bytes:
        """The value's bytes; raises if it cannot be encoded."""

    def decode(self, data: bytes) -> Any:
        """The value back."""


class PickleCodec:
    """The default: any picklable value, read back by Python only."""

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)  # the ledger is written by this application

    def __repr__(self) -> str:
        return "PickleCodec()"


class JsonCodec:
    """JSON values (dicts, lists, strings, numbers, booleans, None): portable and readable."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)

    def __repr__(self) -> str:
        return "JsonCodec()"


class RecordedError(DurableError):
    """A recorded error whose own type could not be pickled or unpickled."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (RecordedError, (self.type_name, self.message))


def encode_error(error: BaseException) -> bytes:
    """A step's error as bytes (pickled; a stand-in if it does not pickle back)."""
    try:
        data = pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)  # an error that pickles but does not load back
    except Exception:
        data = pickle.dumps(RecordedError(type(error).__qualname__, str(error)))
    return data


def decode_error(data: bytes) -> BaseException:
    """The recorded error back."""
    try:
        error = pickle.loads(data)
    except Exception as exc:
        return RecordedError("unreadable error", repr(exc))
    if not isinstance(error, BaseException):
        return RecordedError(type(error).__qualname__, repr(error))
    return error
