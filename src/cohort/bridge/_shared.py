"""``Shared``: one big read-only object, put once, passed to many calls by reference.

The map-over-partitions shape: a 400 MB array and many calls that each read
a slice of it. Pickling the array into every call would copy it once per
call; a ``Shared`` handle pickles as the name of a shared-memory segment
written once, and each worker loads the object from it once and keeps it
until the handle is released. numpy arrays (and anything else whose
pickle hands out its buffers) come back as read-only views of the segment:
no copy in the worker at all.
"""

from __future__ import annotations

import os
import pickle
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from cohort.bridge import _shm

T = TypeVar("T")


class Shared(Generic[T]):
    """A read-only object shared with an executor's workers; pass it instead of the object.

    Made by ``ProcessPool.share(obj)`` or ``DaskExecutor.share(obj)``. Calls
    receive the handle and read :attr:`value`: in the parent it is the
    original object; in a worker of the pool that made it, it is loaded once
    and cached until the handle is released (numpy arrays there are read-only
    views of shared memory); another pool's workers load it per call. The
    object is copied when it is shared: changing the original later is not
    seen by workers.

    Released by :meth:`release`, by ``with`` at block exit, when the last
    reference to the handle goes, or when its executor closes: idle workers
    drop it at once, busy ones when their call ends. A call given a released
    handle fails with ``SerializationError``.
    """

    __slots__ = ("__weakref__", "_finalizer", "_key", "_value")

    def __init__(self, value: T, key: Any, release: Callable[[Any], None] | None) -> None:
        self._value = value
        self._key = key
        self._finalizer = None if release is None else weakref.finalize(self, release, key)

    @property
    def value(self) -> T:
        """The shared object (read-only in workers)."""
        return self._value

    @property
    def key(self) -> Any:
        """What identifies the object to its executor (a segment, a Dask future)."""
        return self._key

    @property
    def released(self) -> bool:
        """True once :meth:`release` ran (or the executor closed)."""
        return self._finalizer is not None and not self._finalizer.alive

    def release(self) -> None:
        """Free the shared copy now (idempotent). The parent's :attr:`value` stays usable."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Shared[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = " released" if self.released else ""
        return f"<cohort.Shared {type(self._value).__name__}{state}>"

    def __reduce__(self) -> tuple[Any, ...]:
        if self.released:
            raise ValueError(released_message(self))
        if isinstance(self._key, tuple):  # a ProcessPool segment
            return _attach, (self._key,)
        return _by_value, (self._value,)  # elsewhere (a Dask handle nested in an argument)


def released_message(handle: Shared[Any]) -> str:
    return (
        f"{handle!r} was released: it cannot be sent to a worker any more; "
        "share the object again, or release it after the calls that use it"
    )


def _by_value(value: T) -> Shared[T]:
    return Shared(value, None, None)


# In a worker: the objects of the segments it has attached, by segment name.
_attached: dict[str, Any] = {}
# In a worker: how its own pool's segment names start. Only those objects are
# kept: the pool tells its workers when one is released, another pool never does.
_own_prefix = ""


def keep_only(prefix: str) -> None:
    """Cache the shared objects of the pool with segment prefix ``prefix`` (a worker's own)."""
    global _own_prefix
    _own_prefix = prefix


def _attach(key: _shm.Key) -> Shared[Any]:
    """The shared object, loaded once per worker if it is its own pool's, else
    (another pool's handle, the parent process) loaded for this message only."""
    name = key[0]
    try:
        value = _attached[name]
    except KeyError:
        value = load(key)
        if _own_prefix and name.startswith(_own_prefix):
            _attached[name] = value
    return Shared(value, None, None)


def load(key: _shm.Key) -> Any:
    """Read a shared segment without unlinking it; buffers are read-only views."""
    name, inline, plen, spans, size, _ = key
    try:
        fd = _shm.open_segment(name, os.O_RDONLY)
    except FileNotFoundError:
        raise LookupError(
            "a cohort.Shared object was released before this call read it: release "
            "shared objects only after the calls that use them have finished"
        ) from None
    try:
        payload = inline if inline is not None else _shm._pread_all(fd, plen, 0)
        buffers = _shm.materialise(fd, spans, size, writable=False)
    finally:
        os.close(fd)
    return pickle.loads(payload, buffers=buffers)


def forget(names: list[str]) -> None:
    """Drop this worker's copies of released objects."""
    for name in names:
        _attached.pop(name, None)


def attached_names() -> list[str]:
    return list(_attached)
