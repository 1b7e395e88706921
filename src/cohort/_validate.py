"""One validator for counts and durations, used at every call site.

Bad input raises where it is given, with a message that names the argument,
what it must be and what came: ``TypeError`` for a value of the wrong kind
(``True``, ``"1"``, ``2.5`` for a count), ``ValueError`` for one of the right
kind out of range (``0``, ``-1``, NaN). ``bool`` is never a number here,
though Python makes it an ``int``: ``limit=True`` is a mistake, not ``1``.
"""

from __future__ import annotations

import asyncio
import difflib
import math
import reprlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, TypeGuard, TypeVar, overload

if TYPE_CHECKING:
    from numbers import Real

__all__ = [
    "check_callable",
    "check_count",
    "check_exception_filter",
    "check_flag",
    "check_fraction",
    "check_name",
    "check_seconds",
    "is_real",
    "keywords_refused",
]

C = TypeVar("C", bound=Callable[..., object])


@overload
def check_count(
    name: str, value: object, *, least: int = ..., none: Literal[False] = ...
) -> int: ...
@overload
def check_count(name: str, value: object, *, least: int = ..., none: bool) -> int | None: ...
def check_count(name: str, value: object, *, least: int = 1, none: bool = False) -> int | None:
    """``value`` as a count: an ``int`` (not a ``bool``) ``>= least``; ``None`` if ``none``."""
    if value is None and none:
        return None
    if type(value) is not int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int >= {least}{_or_none(none)}, got {value!r}")
        value = int(value)
    if value < least:
        raise ValueError(f"{name} must be an int >= {least}{_or_none(none)}, got {value!r}")
    return value


def is_real(value: object) -> TypeGuard[Real]:
    """Whether ``value`` is a real number (``numbers.Real``), ``bool`` excepted."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    import numbers  # not imported with cohort: ints and floats need no ABC

    return isinstance(value, numbers.Real)


@overload
def check_seconds(
    name: str,
    value: object,
    *,
    none: Literal[False] = ...,
    zero: bool = ...,
    inf: bool = ...,
) -> float: ...
@overload
def check_seconds(
    name: str, value: object, *, none: bool, zero: bool = ..., inf: bool = ...
) -> float | None: ...
def check_seconds(
    name: str,
    value: object,
    *,
    none: bool = False,
    zero: bool = True,
    inf: bool = True,
) -> float | None:
    """``value`` as a duration in seconds: a real number ``>= 0`` (``> 0`` unless
    ``zero``), not NaN, ``math.inf`` only if ``inf``; ``None`` if ``none``."""
    if value is None and none:
        return None
    kind = type(value)
    if kind is float or kind is int:  # the common case, without the slow ABC check
        seconds = float(value)  # type: ignore[arg-type]
        if 0 < seconds < math.inf or (seconds == 0 and zero) or (seconds == math.inf and inf):
            return seconds
    what = f"a number of seconds {'>= 0' if zero else '> 0'}{_or_none(none)}"
    if not is_real(value):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if math.isinf(seconds) and not inf:
        raise ValueError(f"{name} must be {what} and finite, got {value!r}")
    return seconds


def check_flag(name: str, value: object) -> bool:
    """``value`` as a flag: ``True`` or ``False`` only (``ordered="no"`` is a mistake)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


@overload
def check_fraction(
    name: str, value: object, *, zero: bool = ..., none: Literal[False] = ...
) -> float: ...
@overload
def check_fraction(name: str, value: object, *, zero: bool = ..., none: bool) -> float | None: ...
def check_fraction(
    name: str, value: object, *, zero: bool = False, none: bool = False
) -> float | None:
    """``value`` as a fraction: a real number in ``(0, 1]`` (``[0, 1]`` if ``zero``)."""
    if value is None and none:
        return None
    what = f"a number in {'[' if zero else '('}0, 1]{_or_none(none)}"
    if not is_real(value):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    fraction = float(value)
    if not (0 <= fraction <= 1) or (fraction == 0 and not zero):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return fraction


def check_name(name: str, value: object) -> str | None:
    """``value`` as a name for messages and events: a ``str`` or ``None``."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {value!r}")
    return value


@overload
def check_callable(name: str, value: C, *, none: bool = ...) -> C: ...
@overload
def check_callable(name: str, value: None, *, none: Literal[True]) -> None: ...
def check_callable(name: str, value: C | None, *, none: bool = False) -> C | None:
    """``value`` as a callable (``None`` too if ``none``)."""
    if value is None and none:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable{_or_none(none)}, got {value!r}")
    return value


def _or_none(none: bool) -> str:
    return " or None" if none else ""


def check_exception_filter(
    name: str, on: object
) -> tuple[type[BaseException], ...] | Callable[[BaseException], bool]:
    """``on`` as exception classes (a tuple) or a predicate over an exception."""
    if isinstance(on, type | tuple):
        kinds = on if isinstance(on, tuple) else (on,)
        if kinds and all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
            return kinds
    elif callable(on):
        return on
    raise TypeError(f"{name} takes exception classes or a predicate, got {on!r}")


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40


def keywords_refused(
    where: str,
    fn: object,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    options: Sequence[str],
    rest: str = "",
) -> TypeError:
    """The error for keywords an ``(fn, *args, *, options)`` entry point does not take.

    Such a call passes ``args`` to ``fn`` by position only; the message shows the
    ``functools.partial`` that passes the keywords (``rest``: what the call takes
    after it, e.g. ``", items"``), lists the entry point's own options and, for a
    misspelt option, the likely one. A coroutine object given as ``fn`` is closed
    (it will never run).
    """
    if asyncio.iscoroutine(fn):
        fn.close()
    name = (getattr(fn, "__name__", None) if callable(fn) else None) or "fn"
    bound = ", ".join(
        [name, *map(_short.repr, args), *(f"{k}={_short.repr(v)}" for k, v in kwargs.items())]
    )
    typos = [
        f"{match[0]}= (for {k}=)"
        for k in kwargs
        if (match := difflib.get_close_matches(k, options, n=1, cutoff=0.75))
    ]
    guess = f"; did you mean {', '.join(typos)}?" if typos else ""
    owned = (
        f"{where}()'s own options are {', '.join(f'{o}=' for o in options)}"
        if options
        else f"{where}() has no options of its own"
    )
    return TypeError(
        f"{where}() got unexpected keyword argument(s) {', '.join(map(repr, kwargs))}. "
        f"{where}() passes only positional arguments to {name}; bind keyword arguments "
        f"with functools.partial: {where}(functools.partial({bound}){rest}). {owned}{guess}"
    )
