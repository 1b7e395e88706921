"""Why cohort cancelled something: ``CancelReason`` and ``cancel_reason(exc)``.

cohort cancels a task with ``task.cancel(reason)``, a ``CancelReason`` as the
message (or a ``LazyReason`` that builds it when first read: a scope's
deadline fires far more often than anyone reads why): asyncio hands the message
to the ``CancelledError`` raised in the task (through every future and task it
awaits), and ``task.result()`` of the cancelled task raises that same error, on
every loop (uvloop runs asyncio's own tasks). So the reason travels with the
error the user catches, with no table to look it up in and nothing to clean up.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any, Literal

_CancelledError = asyncio.CancelledError

__all__ = ["CancelReason", "LazyReason", "ReasonKind", "cancel_reason", "lazy_reason", "site"]

ReasonKind = Literal[
    "deadline",  # a scope's deadline passed (move_on_after, fail_after, ...)
    "scope cancelled",  # CancelScope.cancel()
    "sibling failed",  # a sibling child failed and the policy failed the group
    "body failed",  # the group's body raised
    "winner",  # FirstWins: another child won
    "quorum",  # Quorum: enough children succeeded
    "policy",  # another policy decided the group
    "group timed out",  # the group's timeout passed
    "group cancelled",  # TaskGroup.cancel()
    "handle cancelled",  # Handle.cancel()
    "outside",  # the task running the group was cancelled, with no reason of cohort's
    "shutdown",  # Ctrl-C in cohort.run
    "rejected",  # a sibling's call was refused by a CircuitBreaker or a Bulkhead
    "not needed",  # a Flow node no node that can still run takes the value of any more
]


@dataclass(frozen=True, slots=True)
class CancelReason:
    """Why cohort cancelled a task: ``cohort.cancel_reason(exc)``, ``Outcome.cancel_reason``.

    ``str()`` is ``message``, a sentence such as ``sibling 'fetch-2' failed:
    ValueError('bad')``; it is also what a traceback of the ``CancelledError``
    shows.
    """

    kind: ReasonKind
    message: str
    #: the group or scope that cancelled (its name, or ``move_on_after(0.5)``)
    source: str | None = None
    #: the sibling whose end decided it (the failed one, the winner, the last of a quorum)
    child: str | None = None
    #: the sibling's error, for ``"sibling failed"`` and ``"body failed"``
    error: BaseException | None = None
    #: where the scope was entered (``file:line``), for ``"deadline"`` and ``"scope cancelled"``
    where: str | None = None

    def __str__(self) -> str:
        return self.message


class LazyReason(functools.partial[CancelReason]):
    """A ``CancelReason`` made when first read: ``LazyReason(make, *args)``; ``make(*args)``
    builds it, and returns the same one each time (it keeps what it built).

    ``str()`` and ``repr()`` are those of the reason, as in a traceback of the
    ``CancelledError`` that carries it; ``cancel_reason(exc)`` returns the reason
    itself, and a pickled one is the reason itself.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return self().message

    def __repr__(self) -> str:
        return repr(self())

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        r = self()
        return CancelReason, (r.kind, r.message, r.source, r.child, r.error, r.where)


class _Unread(CancelReason):
    """A ``CancelReason`` whose fields are made when first read (see ``lazy_reason``).

    An instance of ``CancelReason`` in every way a reader can tell, but its type:
    equal to (and hashed as) the reason it stands for, with its ``repr()``, pickled
    and copied as that reason itself.
    """

    # The LazyReason that makes the reason until it is read, then the reason.
    __slots__ = ("_lazy",)
    _lazy: CancelReason | LazyReason

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Called with a reason's fields (dataclasses.replace): made at once.
        _set_lazy(self, CancelReason(*args, **kwargs))

    def _made(self) -> CancelReason:
        made = self._lazy
        if isinstance(made, LazyReason):
            made = made()
            _set_lazy(self, made)
        return made

    def __str__(self) -> str:
        return self._made().message

    def __repr__(self) -> str:
        return repr(self._made())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Unread):
            return other == self._made()  # made by other.__eq__
        return self._made() == other

    def __hash__(self) -> int:
        return hash(self._made())

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        r = self._made()
        return CancelReason, (r.kind, r.message, r.source, r.child, r.error, r.where)


def _field(name: str) -> property:
    return property(lambda self: getattr(self._made(), name), doc=f"the reason's {name}")


for _name in ("kind", "message", "source", "child", "error", "where"):
    setattr(_Unread, _name, _field(_name))
# The slot's own setter: the class is frozen (its __setattr__ raises).
_set_lazy: Callable[[_Unread, object], None] = _Unread.__dict__["_lazy"].__set__
_new = object.__new__


def lazy_reason(make: Callable[..., CancelReason], *args: object) -> CancelReason:
    """A ``CancelReason`` that ``make(*args)`` makes when any of it is first read (a
    race's losers are cancelled for a reason that nobody reads, most of the time).

    ``make`` must give the same reason whenever it is called: its arguments are
    read when the reason is, not now.
    """
    reason = _new(_Unread)
    _set_lazy(reason, LazyReason(make, *args))
    return reason


def cancel_reason(exc: BaseException) -> CancelReason | None:
    """Why cohort cancelled: the reason carried by ``exc`` (a ``CancelledError``, or an
    error raised from one, such as ``fail_after``'s ``TimeoutError``), or ``None``
    for a cancellation cohort did not cause (a bare ``task.cancel()``)."""
    if type(exc) is _CancelledError and exc.args:  # the common case: no walk
        reason = exc.args[0]
        if type(reason) is CancelReason or type(reason) is _Unread:
            return reason
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, asyncio.CancelledError) and current.args:
            reason = current.args[0]
            if isinstance(reason, CancelReason):
                return reason
            if isinstance(reason, LazyReason):
                return reason()
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def site(code: CodeType | None, lasti: int) -> str | None:
    """``file:line`` of the instruction at offset ``lasti`` of ``code``."""
    if code is None:
        return None
    return _site(code, lasti)


@functools.lru_cache(maxsize=4096)
def _site(code: CodeType, lasti: int) -> str:
    # Cached: a deadline that fires in a loop asks for the same place each time,
    # and finding an instruction's line walks the code's line table.
    line = None
    for start, end, number in code.co_lines():
        if start <= lasti < end:
            line = number
            break
    return f"{code.co_filename}:{line if line is not None else code.co_firstlineno}"
