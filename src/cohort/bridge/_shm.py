"""Large payloads through shared memory instead of the pipe.

Pickle protocol 5 lets objects hand their buffers to the pickler
(``buffer_callback``) instead of copying them into the pickle: numpy
arrays, pandas and pyarrow objects do. Buffers of at least ``OOB_MIN``
bytes, and a pickle that is itself that large, are written with
``pwrite`` into one POSIX shared-memory segment per message; the pipe
carries only a small *envelope* naming the segment. ``bytes``,
``bytearray`` and ``memoryview`` do not offer their buffers to the
pickler, so large ones at the top of a call's arguments or result
(or a chunk's items) are wrapped to do so.

The receiver opens the segment and unlinks it at once, so the kernel frees
it as soon as the receiver drops it, whatever happens next. ``bytes`` are
read with ``pread`` straight into a new ``bytes`` object (one copy);
other buffers (numpy arrays) are slices of one private (copy-on-write)
mapping of the segment: no copy until the receiver writes to them.

Segments are named ``/ch-<token>-…`` where the token is per pool, so the
parent can unlink what a dead worker left and a worker whose parent was
killed can unlink everything of that pool (``cleanup_prefix``). After the
token, each kind of segment has a letter of its own (see ``ProcessPool``),
so names of different kinds never meet; a name that exists all the same
(left by someone else) is never reused: a new segment then gets a random
suffix (:func:`create`).
``_posixshmem`` is used rather than ``multiprocessing.shared_memory``: its
resource tracker would unlink segments behind our back (or warn about
them) when the creating process is not the one that unlinks.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import pickle
import secrets
import sys
from typing import Any

try:
    import _posixshmem  # type: ignore[import-not-found]  # CPython's, undocumented
except ImportError:  # pragma: no cover - Windows: everything goes through the pipe
    _posixshmem = None

AVAILABLE = _posixshmem is not None
OOB_MIN = 64 * 1024  # bytes: buffers (and pickles) at least this big go out of band
# Messages up to this size that go through a scratch segment are copied in and out
# of a mapping that each side keeps (no map, open or unmap per message), numpy
# arrays too; larger ones are written with pwrite, and numpy arrays get a new
# segment that the receiver maps (no copy on its side).
COPY_MAX = 4 << 20
ALIGN = 64  # buffer offsets in a segment: numpy and SIMD like aligned data
ENVELOPE = 0x53  # first byte of a frame body that names a segment ("S"); pickles start 0x80
_SHM_DIR = "/dev/shm"

_dumps = pickle.dumps
_PROTOCOL = pickle.HIGHEST_PROTOCOL
BYTES, BYTEARRAY, VIEW = 0, 1, 2  # how the receiver materialises a buffer

# What names a message's segment: (name, the pickle if small else None, the
# pickle's length, (offset, length, kind) of each buffer, segment size, whether
# the segment is a sender's scratch that the receiver must leave in place).
Key = tuple[str, bytes | None, int, list[tuple[int, int, int]], int, bool]


CREATE_ATTEMPTS = 4  # names tried before a segment's creation fails (FileExistsError)


def new_prefix() -> str:
    """A segment-name prefix unique to one pool (short: macOS allows 31 characters)."""
    return f"/ch-{secrets.token_hex(4)}-"


def create(name: str) -> tuple[int, str]:
    """Create a new segment named ``name``; return its file descriptor and its name.

    Never opens a segment that exists already: if ``name`` is taken, the
    segment is created under ``name`` plus a random suffix instead (so it still
    starts with its owner's prefix), and ``FileExistsError`` is raised only if
    every try is taken.
    """
    assert _posixshmem is not None
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
    tried = name
    for _ in range(CREATE_ATTEMPTS):
        try:
            return _posixshmem.shm_open(tried, flags, 0o600), tried
        except FileExistsError:
            tried = f"{name}~{secrets.token_hex(3)}"
    raise FileExistsError(f"shared-memory segment names starting {name!r} are taken")


def worker_family(prefix: str, serial: int) -> str:
    """The start of the names of the segments of a pool's ``serial``-th worker.

    Letters keep the kinds apart: ``c<n>`` a call's arguments and ``s<n>`` a
    shared object (the pool's), ``w<k>-`` worker ``k``'s (``a`` its arguments'
    scratch, ``r`` its replies' scratch, ``r<n>`` its n-th reply): no name of
    one kind can be a name of another, whatever the numbers.
    """
    return f"{prefix}w{serial}-"


def reply_scratch(family: str) -> str:
    return f"{family}r"


def reply_segment(family: str, n: int) -> str:
    return f"{family}r{n}"


def _same(x: Any) -> Any:
    return x


class _Big:
    """Wraps a large ``bytes``/``bytearray``/``memoryview`` so its buffer goes out of band."""

    __slots__ = ("obj",)

    def __init__(self, obj: bytes | bytearray | memoryview) -> None:
        self.obj = obj

    def __reduce__(self) -> tuple[Any, ...]:
        obj = self.obj
        # bytes(b) and _same() return the received object itself: no copy.
        rebuild = memoryview if type(obj) is memoryview else bytes if type(obj) is bytes else _same
        return rebuild, (pickle.PickleBuffer(obj),)


def _wrap(x: Any) -> Any:
    t = type(x)
    if t is memoryview:
        return _Big(x) if x.contiguous else x  # in band too: a memoryview does not pickle
    if (t is bytes or t is bytearray) and len(x) >= OOB_MIN:
        return _Big(x)
    return compact(x)


def wrap_all(xs: Any) -> Any:
    """``xs`` (a tuple or list) with large binary members wrapped and numpy arrays in
    their compact form (see :func:`compact`); ``xs`` itself if none are."""
    if not AVAILABLE:
        return xs
    numpy = sys.modules.get("numpy")
    ndarray = None if numpy is None else numpy.ndarray
    for x in xs:
        t = type(x)
        if (
            t is memoryview
            or t is ndarray
            or ((t is bytes or t is bytearray) and len(x) >= OOB_MIN)
        ):
            return type(xs)([_wrap(y) for y in xs])
    return xs


def wrap(x: Any) -> Any:
    """``x``, wrapped if it is large binary data, in its compact form if a numpy array."""
    return _wrap(x) if AVAILABLE else x


_SCALARS = frozenset({int, float, complex, bool, type(None), str})


def small(x: Any) -> bool:
    """Whether ``x`` is known to pickle with no buffer that could go out of band.

    Scalars, strings (never out of band), ``bytes``/``bytearray`` under
    ``OOB_MIN`` (never wrapped) and numpy arrays of plain values under
    ``OOB_MIN``; anything else (containers, other objects) may hold a large
    buffer somewhere inside. Such a message needs no ``buffer_callback``:
    its plain pickle is what :func:`encode` would make, made faster.
    """
    t = type(x)
    if t in _SCALARS:
        return True
    if t is bytes or t is bytearray:
        return len(x) < OOB_MIN
    numpy = sys.modules.get("numpy")
    return (
        numpy is not None
        and t is numpy.ndarray
        and x.nbytes < OOB_MIN
        and not x.dtype.hasobject  # its items are pickled one by one, and may be large
    )


_PLAIN_KINDS = frozenset("biufc")  # bool, integers, floats, complex: raw bytes say it all


class _Array:
    """A numpy array of plain values, pickled as what rebuilds it and nothing more.

    ``numpy.ndarray(shape, dtype.str, raw, 0, None, order)``: two to three
    times cheaper both ways than numpy's own reduce (most of it the dtype's),
    which a small call would otherwise spend most of its time in. The copy is
    what numpy's pickle makes: dtype (byte order included), shape, C or
    Fortran order (other layouts arrive C-contiguous), writability (a
    read-only contiguous array travels as ``bytes`` and arrives read-only). A
    contiguous array of ``OOB_MIN`` bytes or more offers its memory as a
    ``PickleBuffer``, to go out of band, as numpy's own reduce does (pickle
    marks it read-only if it is).
    """

    __slots__ = ("a",)

    def __init__(self, a: Any) -> None:
        self.a = a

    def __reduce__(self) -> tuple[Any, ...]:
        a = self.a
        flags = a.flags
        if flags.c_contiguous:
            src, order, shared = a, "C", True
        elif flags.f_contiguous:
            src, order, shared = a.T, "F", True  # the same memory, C-contiguous
        else:
            src, order, shared = a, "C", False  # numpy's pickle sends a C-ordered copy
        # Read-only stays read-only where numpy's pickle would hand out the array's own
        # buffer (a contiguous one); a copy of another layout arrives writable, as there.
        # Through a memoryview: bytes() of a 0-d integer array would be that many zeros.
        raw: Any
        if shared and a.nbytes >= OOB_MIN:
            raw = pickle.PickleBuffer(src)
        elif shared and not flags.writeable:
            raw = src.tobytes()
        else:
            raw = bytearray(memoryview(src))
        return type(a), (a.shape, a.dtype.str, raw, 0, None, order)


def compact(x: Any) -> Any:
    """``x``, or a cheaper-to-pickle stand-in for it if it is a numpy array of plain
    values (exactly ``numpy.ndarray``; bool, integer, float or complex dtype)."""
    if type(x) in _SCALARS or type(x) is bytes:
        return x
    numpy = sys.modules.get("numpy")
    if numpy is not None and type(x) is numpy.ndarray:
        dtype = x.dtype
        if dtype.kind in _PLAIN_KINDS and dtype.metadata is None:
            return _Array(x)
    return x


def compact_all(xs: tuple[Any, ...]) -> tuple[Any, ...]:
    """``xs`` with :func:`compact` applied to each member (``xs`` itself if none changes)."""
    numpy = sys.modules.get("numpy")
    if numpy is None or numpy.ndarray not in map(type, xs):
        return xs
    return tuple(map(compact, xs))


class Outbound:
    """A message whose large buffers still live in the sender's objects.

    Nothing is copied until :meth:`write` puts it in a segment (the pool does
    that when it sends the call, the worker when it replies).
    """

    __slots__ = ("buffers", "obj", "payload", "written")

    def __init__(self, obj: Any, payload: bytes, buffers: list[pickle.PickleBuffer]) -> None:
        self.obj = obj
        self.payload = payload
        self.buffers = buffers
        self.written = ""  # the new segment :meth:`write` made, if it made one

    @property
    def nbytes(self) -> int:
        return len(self.payload) + sum(b.raw().nbytes for b in self.buffers)

    def write(self, name: str, scratch: Scratch | None = None) -> Key:
        """Write a new segment ``name`` (or ``scratch``); return the key a receiver reads it by.

        ``scratch`` is used when every buffer will be copied out by the
        receiver: a message of at most ``COPY_MAX`` bytes (copied in and out
        of mappings both sides keep), or one whose buffers are all ``bytes``
        or ``bytearray``: rewriting pages that already exist is three times
        faster than filling a new segment. A larger message with other buffers
        (numpy arrays) gets a new segment, because the receiver keeps it as the
        memory of those objects; its name is ``name`` unless that is taken (see
        :func:`create`), and is kept in :attr:`written`.

        Raises ``OSError`` (no room in ``/dev/shm``, too many files) with a new
        segment removed; the caller then sends :meth:`inband` instead.
        """
        assert _posixshmem is not None
        payload = self.payload
        inline = payload if len(payload) < OOB_MIN else None
        pos = 0 if inline is not None else _align(len(payload))
        spans: list[tuple[int, int, int]] = []
        views = [b.raw() for b in self.buffers]
        try:
            for view in views:
                exporter = type(view.obj)
                kind = BYTES if exporter is bytes else BYTEARRAY if exporter is bytearray else VIEW
                spans.append((pos, view.nbytes, kind))
                pos = _align(pos + view.nbytes)
            if scratch is not None and pos <= COPY_MAX:
                into = scratch.mapped(pos)
                if inline is None:
                    into[: len(payload)] = memoryview(payload)
                for (off, n, _), view in zip(spans, views, strict=True):
                    into[off : off + n] = view
                name, reused = scratch.name, True
            elif scratch is not None and all(kind != VIEW for _, _, kind in spans):
                fd = scratch.reserve(pos)
                _fill(fd, payload if inline is None else None, spans, views)
                name, reused = scratch.name, True
            else:
                fd, name = create(name)
                self.written = name
                reused = False
                try:
                    os.ftruncate(fd, max(pos, 1))
                    _fill(fd, payload if inline is None else None, spans, views)
                except BaseException:
                    unlink(name)
                    raise
                finally:
                    os.close(fd)
        finally:
            for view in views:
                view.release()
        self.release()
        return (name, inline, len(payload), spans, pos, reused)

    def inband(self) -> bytes:
        """The whole message as one ordinary pickle (when shared memory failed)."""
        self.release()
        return pickle.dumps(self.obj, pickle.HIGHEST_PROTOCOL)

    def release(self) -> None:
        """Let go of the sender's buffers (a ``bytearray`` can be resized again)."""
        for b in self.buffers:
            b.release()
        self.buffers = []


def _fill(
    fd: int, payload: bytes | None, spans: list[tuple[int, int, int]], views: list[memoryview]
) -> None:
    if payload is not None:
        _pwrite_all(fd, payload, 0)
    for (off, _, _), view in zip(spans, views, strict=True):
        _pwrite_all(fd, view, off)


class Scratch:
    """A segment that one sender rewrites for message after message to one receiver.

    Only for messages the receiver copies out at once (see ``Outbound.write``),
    and only one in flight at a time, which the pool guarantees: a worker has
    one call, and the parent reads a reply before the worker can write the next.
    It is created like any new segment (:func:`create`): if ``name`` is taken,
    :attr:`name` becomes the name it got; receivers read it from each message.
    The pool empties both directions' scratch segments when they have been
    idle a while (:meth:`trim`, :func:`truncate`), so the size is read afresh.
    """

    __slots__ = ("base", "fd", "name", "size", "used", "view")

    def __init__(self, name: str) -> None:
        self.base = self.name = name
        self.fd = -1
        self.size = 0
        self.used = 0.0  # when it was last written, on the owner's clock
        self.view: memoryview | None = None  # its first COPY_MAX bytes, mapped shared

    def mapped(self, n: int) -> memoryview:
        """The first ``n`` (at most ``COPY_MAX``) bytes of the segment, to write into.

        Mapped once (shared, ``COPY_MAX`` long whatever the size) and kept: only
        the first ``n`` bytes exist in the segment, and only those are touched.
        """
        fd = self.reserve(n)
        view = self.view
        if view is None:
            view = self.view = _map(fd, COPY_MAX, writable=True, private=False)
        return view[:n]

    def reserve(self, n: int) -> int:
        assert _posixshmem is not None
        if self.fd < 0:
            self.fd, self.name = create(self.base)
        self.size = os.fstat(self.fd).st_size  # another process may have emptied it
        if n > self.size:
            os.ftruncate(self.fd, n)
            self.size = n
        return self.fd

    def trim(self) -> None:
        """Give the pages back (the segment stays, empty)."""
        if self.fd >= 0 and self.size:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            self.size = 0

    def close(self) -> None:
        """Close and remove it (if it was ever created: the name may be someone else's)."""
        self.view = None  # unmapped with it
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            unlink(self.name)
        self.size = 0


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def encode(obj: Any, *, always: bool = False) -> bytes | Outbound:
    """A plain pickle when ``obj`` is small, else an :class:`Outbound` for a segment
    (``always``: an ``Outbound`` whatever the size, every buffer out of band)."""
    if not AVAILABLE:
        return _dumps(obj, _PROTOCOL)
    buffers: list[pickle.PickleBuffer] = []
    least = 0 if always else OOB_MIN

    def out_of_band(buf: pickle.PickleBuffer) -> bool:
        with buf.raw() as view:
            if view.nbytes < least:
                return True  # in band: small buffers are cheaper in the pickle
        buffers.append(buf)
        return False

    payload = _dumps(obj, _PROTOCOL, buffer_callback=out_of_band)
    if buffers or always or len(payload) >= OOB_MIN:
        return Outbound(obj, payload, buffers)
    return payload


def envelope(key: Key) -> bytes:
    """The frame body that stands for a message in segment ``key``."""
    return bytes((ENVELOPE,)) + pickle.dumps(key, pickle.HIGHEST_PROTOCOL)


def is_envelope(data: bytes) -> bool:
    return bool(data) and data[0] == ENVELOPE


def decode(data: bytes) -> Any:
    """Unpickle a frame body, fetching (and unlinking) its segment if it names one."""
    if not is_envelope(data):
        return pickle.loads(data)
    assert _posixshmem is not None
    key: Key = pickle.loads(memoryview(data)[1:])
    name, inline, plen, spans, size, reused = key
    if reused and size <= COPY_MAX:
        return _copy_out(name, inline, plen, spans)
    fd = _posixshmem.shm_open(name, os.O_RDWR, 0)
    try:
        if not reused:
            unlink(name)  # from now on the kernel frees it when we let go
        payload = inline if inline is not None else _pread_all(fd, plen, 0)
        buffers = materialise(fd, spans, size, writable=True)
    finally:
        os.close(fd)
    return pickle.loads(payload, buffers=buffers)


# The sender's scratch segments this process reads from, mapped once (shared,
# read-only, ``COPY_MAX`` long): one per worker in the parent, one in a worker.
_scratch_views: dict[str, memoryview] = {}


def _copy_out(name: str, inline: bytes | None, plen: int, spans: list[tuple[int, int, int]]) -> Any:
    """Rebuild a message from a sender's scratch: every buffer copied into an object
    of its own (``bytes``, ``bytearray``; a ``bytearray`` under anything else), since
    the sender rewrites the segment with its next message."""
    view = _scratch_views.get(name)
    if view is None:
        assert _posixshmem is not None
        fd = _posixshmem.shm_open(name, os.O_RDONLY, 0)
        try:
            view = _scratch_views[name] = _map(fd, COPY_MAX, writable=False, private=False)
        finally:
            os.close(fd)
    payload = inline if inline is not None else view[:plen]
    buffers = [
        view[off : off + n].tobytes() if kind == BYTES else bytearray(view[off : off + n])
        for off, n, kind in spans
    ]
    return pickle.loads(payload, buffers=buffers)


def forget_scratch(name: str) -> None:
    """Unmap the scratch segment ``name`` this process read from (its sender is gone)."""
    _scratch_views.pop(name, None)


def materialise(
    fd: int, spans: list[tuple[int, int, int]], size: int, *, writable: bool
) -> list[Any]:
    buffers: list[Any] = []
    whole: memoryview | None = None
    for off, n, kind in spans:
        if kind == BYTES:
            buffers.append(_pread_all(fd, n, off))
        elif kind == BYTEARRAY:
            buffers.append(_pread_into(fd, n, off))
        else:
            if whole is None:
                whole = _map(fd, size, writable)
            buffers.append(whole[off : off + n])
    return buffers


class _Mapping:
    """Owns one mapping of a segment; unmapped when the last view of it goes."""

    __slots__ = ("address", "size")

    def __init__(self, address: int, size: int) -> None:
        self.address = address
        self.size = size

    def __del__(self) -> None:
        _libc().munmap(self.address, self.size)


@functools.cache
def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _map(fd: int, size: int, writable: bool, *, private: bool | None = None) -> memoryview:
    """A view of the whole segment that needs no file descriptor.

    A writable view is mapped private (copy-on-write): what this process
    writes stays its own, and a process it forks later gets its own copy,
    as with any other memory; pages are copied only when written. A
    read-only view (a ``Shared`` object's) is mapped shared. ``private``
    overrides that (a scratch segment's writer maps it shared and writable).

    Not ``mmap.mmap``: before Python 3.13 it keeps a duplicate of the file
    descriptor open for as long as the mapping lives, and a program holding a
    thousand received arrays would run out of descriptors.
    """
    import ctypes

    size = max(size, 1)
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    if private is None:
        private = writable
    flags = mmap.MAP_PRIVATE if private else mmap.MAP_SHARED
    address = _libc().mmap(None, size, prot, flags, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        err = ctypes.get_errno()
        raise OSError(err, f"cannot map a shared-memory segment: {os.strerror(err)}")
    memory = (ctypes.c_ubyte * size).from_address(address)
    memory.mapping = _Mapping(address, size)  # type: ignore[attr-defined]  # unmaps with it
    view = memoryview(memory).cast("B")
    return view if writable else view.toreadonly()


def scratch_of(data: bytes) -> str | None:
    """The name of the scratch segment an envelope names (``None``: a new segment)."""
    key: Key = pickle.loads(memoryview(data)[1:])
    return key[0] if key[5] else None


def discard(data: bytes) -> None:
    """Unlink the segment an envelope names, for a reply nobody will read."""
    if is_envelope(data):
        with contextlib.suppress(Exception):
            key: Key = pickle.loads(memoryview(data)[1:])
            if not key[5]:
                unlink(key[0])


def open_segment(name: str, flags: int) -> int:
    """A file descriptor for the existing segment ``name``."""
    assert _posixshmem is not None
    fd: int = _posixshmem.shm_open(name, flags, 0)
    return fd


def truncate(name: str) -> None:
    """Empty segment ``name`` (give its pages back), if it exists."""
    if _posixshmem is None:
        return
    try:
        fd = _posixshmem.shm_open(name, os.O_RDWR, 0)
    except FileNotFoundError:
        return
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def unlink(name: str) -> None:
    """Remove segment ``name``; one that is already gone is fine."""
    if _posixshmem is not None:
        with contextlib.suppress(FileNotFoundError):
            _posixshmem.shm_unlink(name)


def segment_names(prefix: str) -> list[str]:
    """The segments whose names start with ``prefix`` (one pool's), where they can be
    listed (Linux's ``/dev/shm``); elsewhere none."""
    if not os.path.isdir(_SHM_DIR) or not sys.platform.startswith("linux"):
        return []
    stem = prefix.lstrip("/")
    try:
        return sorted(entry for entry in os.listdir(_SHM_DIR) if entry.startswith(stem))
    except OSError:
        return []


def cleanup_prefix(prefix: str) -> None:
    """Unlink every segment whose name starts with ``prefix`` (where they can be listed)."""
    for entry in segment_names(prefix):
        unlink("/" + entry)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)


def _pread_all(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)  # one read for anything under ~2 GiB on Linux
    if len(data) == n:
        return data
    return bytes(_pread_into(fd, n, offset))


def _pread_into(fd: int, n: int, offset: int) -> bytearray:
    buf = bytearray(n)
    with memoryview(buf) as view:
        done = 0
        while done < n:
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise EOFError(f"shared-memory segment ended {n - done} bytes early")
            done += got
    return buf
