"""What travels over a worker's pipes: length-prefixed pickles, and how errors are packed.

A frame is a 4-byte little-endian length followed by a pickle. Both sides
read in pieces smaller than 128 KiB: larger ``os.read`` buffers go through
malloc's mmap path and cost ~15 us each, more than a whole small call.

Exceptions cross as :class:`RemoteFailure` (type name, message, formatted
traceback and, when it pickles, the exception itself) so that the parent
can rebuild the same type or, failing that, raise ``RemoteError`` without
losing anything the worker said.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
import inspect
import pickle
import struct
import sys
import traceback
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cohort._exceptions import RemoteError, SerializationError
from cohort._observe._events import emit
from cohort.bridge import _shm

HEADER = struct.Struct("<I")
_pack = HEADER.pack
_unpack_from = HEADER.unpack_from
_dumps = pickle.dumps
READ_SIZE = 64 * 1024  # below 128 KiB on purpose, see the module docstring
PROTOCOL = pickle.HIGHEST_PROTOCOL

# Request kinds (parent -> worker) and reply kinds (worker -> parent).
CALL = 0  # (CALL, fn, args) -> (OK, value) | (FAIL, RemoteFailure)
CHUNK = 1  # (CHUNK, fn, items) -> (OK, (values, failure_or_None, elapsed))
EXIT = 2  # (EXIT, None, None): finish and exit (no reply)
FORGET = 3  # (FORGET, names, None): drop these released shared objects (no reply)
OK = 0
FAIL = 1
READY = 2  # (READY, pid)
INIT_FAILED = 3  # (INIT_FAILED, RemoteFailure)
UNPICKLABLE = 4  # (UNPICKLABLE, message): result or request could not be (un)pickled


PIPE_SIZE = 1 << 20  # bytes a pipe holds (Linux's default, 64 KiB, is the floor for
# payloads under the shared-memory threshold: the writer waits for the reader at every 64 KiB)


def widen(fd: int) -> None:
    """Let pipe ``fd`` hold ``PIPE_SIZE`` bytes, where the system allows it
    (Linux, within ``/proc/sys/fs/pipe-max-size`` and the user's pipe quota)."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setpipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setpipe, PIPE_SIZE)


def frame(obj: Any) -> bytes:
    """Pickle ``obj`` and prefix it with its length."""
    payload = pickle.dumps(obj, PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def encode(obj: Any, *, small: bool = False) -> bytes | _shm.Outbound:
    """A frame for ``obj``, or, when it is large, an ``Outbound`` to :func:`finish` at send time.

    ``small``: ``obj`` is known to hold no buffer that could go out of band
    (see ``_shm.small``), so a plain pickle is tried first: what a small call
    costs matters, and the ``buffer_callback`` is most of it.
    """
    if small:
        payload = _dumps(obj, PROTOCOL)
        if len(payload) < _shm.OOB_MIN:
            return _pack(len(payload)) + payload
    out = _shm.encode(obj)
    if out.__class__ is bytes:
        return _pack(len(out)) + out
    return out


def finish(out: _shm.Outbound, segment: str, scratch: _shm.Scratch | None = None) -> bytes:
    """Write ``out``'s segment and return the envelope frame; through the pipe if that fails.

    A full ``/dev/shm`` (containers often give it 64 MB) costs speed, never the call.
    """
    try:
        body = _shm.envelope(out.write(segment, scratch))
    except OSError as exc:
        payload = out.inband()
        _fell_back(exc)
        return HEADER.pack(len(payload)) + payload
    return HEADER.pack(len(body)) + body


def _fell_back(exc: OSError) -> None:
    """Say that a payload went through the pipe: a ``bridge.shm_fallback`` event and a
    ``RuntimeWarning``, unless a warnings filter turns it into an error, which would
    undo the fallback (``-W error``): the warning is then dropped."""
    emit("warning", "bridge.shm_fallback", reason=str(exc))
    with contextlib.suppress(Warning):
        warnings.warn(
            f"cohort: a large payload went through the pipe, not shared memory ({exc}); "
            "give /dev/shm more room for full speed",
            RuntimeWarning,
            stacklevel=1,
        )


class FrameReader:
    """Collects bytes and yields complete frames, whatever the read boundaries."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        if not buf and len(data) >= 4 and _unpack_from(data)[0] == len(data) - 4:
            return [data[4:]]  # one whole frame, the usual case: one copy, not three
        buf += data
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        while size - pos >= 4:
            (n,) = HEADER.unpack_from(buf, pos)
            if size - pos - 4 < n:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out


class Traced:
    """A function sent with its caller's trace context (a W3C ``traceparent`` dict from
    ``opentelemetry.propagate.inject``): where it runs, each call runs with that context
    attached, so that spans the function opens are children of the caller's span.
    Without OpenTelemetry there, the function is called as it is."""

    __slots__ = ("carrier", "fn")

    def __init__(self, fn: Any, carrier: dict[str, str]) -> None:
        self.fn = fn
        self.carrier = carrier

    def __repr__(self) -> str:
        return f"Traced({describe(self.fn)})"

    def target(self) -> Any:
        """The function itself (a ``@cohort.cpu`` wrapper's target where it is one)."""
        return getattr(self.fn, "_cohort_cpu_target", self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with trace_context(self.carrier):
            return self.target()(*args, **kwargs)


def traced(fn: Any, carrier: dict[str, str] | None) -> Any:
    """``fn`` carrying ``carrier`` (``fn`` itself when there is no context to carry)."""
    return fn if not carrier else Traced(fn, carrier)


@contextlib.contextmanager
def trace_context(carrier: dict[str, str]) -> Iterator[None]:
    """Attach the trace context in ``carrier`` for the block, if OpenTelemetry is importable."""
    try:
        from opentelemetry import context, propagate
    except ImportError:
        yield
        return
    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


@dataclass(frozen=True, slots=True)
class RemoteFailure:
    """An exception raised in a worker, packed so that nothing is lost in transit."""

    type_name: str
    message: str
    traceback: str
    pickled: bytes | None  # the exception itself, when it pickles

    @classmethod
    def capture(cls, exc: BaseException) -> RemoteFailure:
        tb = "".join(traceback.format_exception(exc))
        pickled: bytes | None = None
        if isinstance(exc, Exception):
            try:
                pickled = pickle.dumps(exc, PROTOCOL)
            except Exception:
                pickled = None
        return cls(_type_name(type(exc)), str(exc), tb, pickled)

    def rebuild(self) -> BaseException:
        """The same exception type with the remote traceback noted, else ``RemoteError``."""
        if self.pickled is not None:
            try:
                exc = pickle.loads(self.pickled)
            except Exception as e:
                reason = f"(not rebuilt here: {type(e).__name__}: {e})"
                return RemoteError(self.type_name, f"{self.message} {reason}", self.traceback)
            if isinstance(exc, Exception):
                exc.add_note(f"\nRemote traceback (from the worker process):\n{self.traceback}")
                return exc
        return RemoteError(self.type_name, self.message, self.traceback)


def _type_name(tp: type) -> str:
    module = tp.__module__
    return tp.__qualname__ if module == "builtins" else f"{module}.{tp.__qualname__}"


def describe(fn: Any) -> str:
    """A short name for ``fn`` in messages."""
    if isinstance(fn, functools.partial):
        return f"functools.partial({describe(fn.func)}, ...)"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    module = getattr(fn, "__module__", None)
    if name is None:
        return repr(fn)
    return f"{module}.{name}" if module else str(name)


def check_plain(fn: Any) -> None:
    """Refuse what no worker can run: a coroutine object, an async function, not a callable."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if asyncio.iscoroutine(fn):
        fn.close()  # it will never run: no "never awaited" warning
        raise TypeError(
            f"cannot run the coroutine object {fn!r} in a worker process: pass a plain "
            "(def) function and its arguments; await async work in the parent instead"
        )
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"cannot run the async function {describe(fn)} in a worker process: workers "
            "run plain (def) functions; await it in the parent, or give the worker a def "
            "that calls asyncio.run() on it"
        )


_accepted: Any = None  # the plain function check_callable() accepted last


def check_callable(fn: Any) -> None:
    """Refuse at submit time what cannot reach a worker by reference: lambdas and closures.

    A plain function accepted once is accepted again at once: a loop of small
    calls checks its function once (only functions are remembered; a
    ``partial`` may hold large arguments and is checked each time).
    """
    global _accepted
    if fn is _accepted:
        return
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    check_plain(inner)
    if isinstance(inner, types.FunctionType):
        qualname = inner.__qualname__
        if inner.__name__ == "<lambda>":
            raise SerializationError(
                f"cannot send the lambda {describe(inner)} to a worker process: lambdas are "
                "not picklable; use a module-level def (with functools.partial for bound "
                "arguments)"
            )
        if "<locals>" in qualname:
            raise SerializationError(
                f"cannot send the nested function {describe(inner)} to a worker process: "
                "functions defined inside another function (closures) are not picklable; "
                "move it to module level and pass what it captured as arguments "
                "(or bind them with functools.partial)"
            )
        if inner is fn:
            _accepted = fn


def dumps_request(kind: int, fn: Any, args: Any) -> bytes | _shm.Outbound:
    """A framed request (see :func:`encode`); unpicklable pieces raise ``SerializationError``
    naming the culprit."""
    try:
        # Only a call's arguments are looked at: a chunk may hold thousands of tiny
        # items, and a large one among them still reaches shared memory (in the pickle).
        if kind != CALL:
            return encode((kind, fn, args))
        # A function goes by reference; a partial may hold large arguments of its own.
        small = type(fn) is types.FunctionType and all(map(_shm.small, args))
        sent = _shm.compact_all(args) if small else _shm.wrap_all(args)
        return encode((kind, fn, sent), small=small)
    except Exception as exc:
        raise _request_error(kind, fn, args, exc) from exc


def _request_error(kind: int, fn: Any, args: Any, exc: Exception) -> SerializationError:
    try:
        pickle.dumps(fn, PROTOCOL)
    except Exception as e:
        return SerializationError(f"cannot pickle the function {describe(fn)}: {e}")
    label = "argument" if kind == CALL else "item"
    for i, arg in enumerate(args):
        try:
            pickle.dumps(arg, PROTOCOL)
        except Exception as e:
            return SerializationError(
                f"cannot pickle {label} {i} ({type(arg).__name__}) for {describe(fn)}: {e}"
            )
    return SerializationError(f"cannot pickle the call to {describe(fn)}: {exc}")


def loads_reply(data: bytes, fn: Any) -> tuple[int, Any]:
    """Unpickle a reply; a result that cannot be rebuilt here becomes ``SerializationError``."""
    try:
        kind, value = _shm.decode(data)
    except Exception as exc:
        err = SerializationError(
            f"the result of {describe(fn)} could not be unpickled in the parent: "
            f"{type(exc).__name__}: {exc}"
        )
        return FAIL, err
    return kind, value


def main_module_hint() -> str:
    """Why workers may fail at start: the usual cause is a missing ``__main__`` guard."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    where = f" ({path})" if path else ""
    return (
        "worker processes exited before they were ready. With the 'spawn' and "
        "'forkserver' start methods every worker imports your main module"
        f"{where}; if it starts the pool at import time, add an "
        '`if __name__ == "__main__":` guard around the code that runs your program. '
        "The workers' stderr shows the error they met."
    )
