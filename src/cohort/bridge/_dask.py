"""DaskExecutor: the bridge's executor interface on a Dask distributed cluster.

Uses Dask's native asyncio API (``Client(asynchronous=True)``) on the running
loop. ``distributed`` is imported only when an executor starts, so the
optional extra (``cohort[dask]``) costs nothing when unused.

Semantics differ from ``ProcessPool`` where Dask differs, and say so:

* **At-least-once.** Dask may run a task again when a worker dies (it
  reschedules the task's key elsewhere), so a function may run more than
  once for one call. Use idempotent functions.
* **Cancellation stops waiting, not running.** A cancelled call is
  ``client.cancel``-ed: the caller gets ``CancelledError`` at once and the
  result is discarded, but a task already running on a worker runs to its
  end. With ``hard_stop=True`` the worker processes that were running
  cancelled tasks are killed through their nannies (SIGKILL, then the nanny
  starts a new worker), which stops the work within milliseconds of the
  cancellation reaching the scheduler (and anything else they were running,
  which Dask then reschedules: at-least-once again). Until its nanny's new
  worker joins (seconds), that worker is absent; a ``SpecCluster`` (such as
  ``LocalCluster``) closes the nanny for good when its worker is absent
  ``distributed.deploy.lost-worker-timeout`` (15 s) after any earlier loss,
  which repeated hard stops make likely: raise it where the cluster lives.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import importlib
import math
import weakref
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Sequence, Sized
from typing import Any, Never, TypeVar

from cohort._exceptions import ClosedError, SerializationError
from cohort._observe._events import EVENTS, emit
from cohort._validate import check_flag, keywords_refused
from cohort.bridge._chunks import (
    ChunkSizer,
    check_map_arguments,
    collect_items,
    iterate_items,
    stream_chunks,
)
from cohort.bridge._shared import Shared, released_message
from cohort.bridge._wire import check_plain, describe, traced

# ``distributed`` is optional and only partly typed: its objects are ``Any`` here.
Client = Any
Future = Any


def _distributed() -> Any:
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise ImportError(
            "cohort.bridge.DaskExecutor needs Dask distributed: pip install 'cohort[dask]'"
        ) from exc


_T = TypeVar("_T")
_R = TypeVar("_R")


async def _stop_workers(client: Client, addresses: list[str]) -> None:
    """Kill the worker processes at ``addresses`` now; their nannies start new ones.

    Asking the nanny to SIGKILL its worker takes milliseconds, where
    ``restart_workers`` first asks the worker to close (which a busy task
    delays by seconds) and then waits for the new one to join. Workers
    without a nanny are restarted the scheduler's way.
    """
    replies = await client.run(
        _kill_worker_process, workers=addresses, nanny=True, on_error="return"
    )
    failed = {
        a: replies.get(a)
        for a in addresses
        if a not in replies or isinstance(replies[a], BaseException)
    }
    if not failed:
        return
    emit("warning", "bridge.dask_kill_failed", replies={a: repr(r) for a, r in failed.items()})
    # Those that are still there (no nanny, or it did not answer): the scheduler's way.
    present = (await client.scheduler.identity()).get("workers", {})
    left = [a for a in failed if a in present]
    if left:
        await client.restart_workers(left, raise_for_error=False)


async def _kill_worker_process(dask_worker: Any) -> int | None:
    """Runs on a worker's nanny: SIGKILL the worker process and wait until it is gone."""
    process = getattr(getattr(dask_worker, "process", None), "process", None)
    if process is None or not process.is_alive():
        return None
    pid: int = process.pid
    await process.kill()
    await process.join(timeout=10)
    return pid


def _carrier() -> dict[str, str] | None:
    """The caller's trace context for a task, when instrumentation is on and a span is current."""
    sink = EVENTS.sink
    return None if sink is None else sink.carrier()


def _apply_chunk(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """Runs on a Dask worker: one task for a whole chunk of small calls."""
    return [fn(x) for x in items]


def _is_scattered(x: Any) -> bool:
    return isinstance(x, Shared) and x.key is not None and not isinstance(x.key, tuple)


def _split_shared(fn: Any, args: tuple[Any, ...]) -> tuple[Any, Any, list[Any], list[bool]] | None:
    """Where ``Shared`` handles of this executor appear in a call: ``None`` if nowhere,
    else (function, its keyword arguments, all positional arguments with each handle
    replaced by its Dask future, which Dask resolves to the value on the worker,
    and which of them were handles).

    Handles are looked for in the arguments and in a ``functools.partial``'s;
    a released one raises ``SerializationError``, as it does on a ``ProcessPool``.
    """
    _refuse_released(fn, args)
    inner, kw, lead = fn, {}, ()
    if isinstance(fn, functools.partial) and any(_is_scattered(a) for a in fn.args):
        inner, kw, lead = fn.func, fn.keywords, fn.args
    was_shared = [_is_scattered(a) for a in (*lead, *args)]
    if not any(was_shared):
        return None
    every = [a.key if s else a for a, s in zip((*lead, *args), was_shared, strict=True)]
    return inner, kw, every, was_shared


def _refuse_released(fn: Any, args: tuple[Any, ...]) -> None:
    for i, a in enumerate(args):
        if isinstance(a, Shared) and a.released:
            raise SerializationError(
                f"cannot pickle argument {i} (Shared) for {describe(fn)}: {released_message(a)}"
            )
    if isinstance(fn, functools.partial):
        for a in (*fn.args, *fn.keywords.values()):
            if isinstance(a, Shared) and a.released:
                raise SerializationError(
                    f"cannot pickle the function {describe(fn)}: {released_message(a)}"
                )


def _rewrap(values: list[Any], was_shared: list[bool]) -> list[Any]:
    return [Shared(v, None, None) if s else v for v, s in zip(values, was_shared, strict=True)]


def _call_shared(fn: Any, kw: Any, was_shared: list[bool], args: list[Any]) -> Any:
    """Runs on a Dask worker: the call, with the shared values as ``Shared`` handles again."""
    return fn(*_rewrap(args, was_shared), **kw)


def _chunk_shared(
    fn: Any, kw: Any, was_shared: list[bool], lead: list[Any], items: list[Any]
) -> list[Any]:
    """Runs on a Dask worker: a chunk of ``functools.partial(fn, *lead, **kw)`` calls."""
    call = functools.partial(fn, *_rewrap(lead, was_shared), **kw)
    return [call(x) for x in items]


class DaskExecutor:
    """Runs calls on a Dask distributed cluster, with the same interface as ``ProcessPool``.

    Args:
        address_or_client: a scheduler address, an asynchronous ``distributed.Client``
            (not closed by this executor), or ``None`` to start a ``LocalCluster``
            (closed by ``aclose()``).
        hard_stop: on cancellation, kill the worker processes running the cancelled
            tasks (their nannies start new ones) so the work really stops before
            the cancellation completes (default: only stop waiting).
        cluster_options: keyword arguments for ``LocalCluster`` when one is started.

    At-least-once: a task may run again if a worker dies. See the module docs.

    Example:
        ```python
        async with cohort.bridge.DaskExecutor("tcp://scheduler:8786") as dask:
            total = sum(await dask.map(score, rows))
            best = await dask.run(search, space)
        ```
    """

    def __init__(
        self,
        address_or_client: str | Client | None = None,
        *,
        hard_stop: bool = False,
        cluster_options: dict[str, Any] | None = None,
    ) -> None:
        self._target = address_or_client
        self._hard_stop = check_flag("hard_stop", hard_stop)
        if cluster_options is not None and not isinstance(cluster_options, dict):
            raise TypeError(f"cluster_options must be a dict or None, got {cluster_options!r}")
        if cluster_options and address_or_client is not None:
            raise ValueError(
                "cluster_options= configures the LocalCluster DaskExecutor() starts; with an "
                "address or a client there is none to configure: drop one of the two"
            )
        target = address_or_client
        if target is not None and not isinstance(target, str) and not hasattr(target, "submit"):
            raise TypeError(
                "DaskExecutor takes a scheduler address (str), an asynchronous "
                f"distributed.Client, or None; got {address_or_client!r}"
            )
        self._cluster_options = dict(cluster_options or {})
        self._client: Client | None = None
        self._cluster: Any = None
        self._owns_client = False
        self._closed = False
        self._starting: asyncio.Lock | None = None
        self._shared: weakref.WeakSet[Shared[Any]] = weakref.WeakSet()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<cohort.bridge.DaskExecutor {self._target!r} {state}>"

    async def __aenter__(self) -> DaskExecutor:
        await self._ensure_client()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def client(self) -> Client:
        """The ``distributed.Client`` in use (after the executor started)."""
        if self._client is None:
            raise RuntimeError(f"{self!r} has not started; use `async with` or call it first")
        return self._client

    async def _ensure_client(self) -> Client:
        if self._closed:
            raise ClosedError(f"{self!r} is closed; create a new executor")
        if self._client is not None:
            return self._client
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._client is None:
                self._client = await self._connect()
        return self._client

    async def _connect(self) -> Client:
        dd = _distributed()
        target = self._target
        if isinstance(target, dd.Client):
            if not target.asynchronous:
                raise ValueError(
                    f"{self!r} needs an asynchronous client: Client(..., asynchronous=True)"
                )
            return target
        self._owns_client = True
        if target is None:
            options: dict[str, Any] = {"processes": True, "dashboard_address": ":0"}
            options.update(self._cluster_options)
            # Kept before it is awaited: a start cancelled half-way is still
            # closed by aclose(), so no worker process outlives the executor.
            cluster = dd.LocalCluster(asynchronous=True, **options)
            self._cluster = cluster
            await cluster
            target = cluster
        client = dd.Client(target, asynchronous=True)
        try:
            return await client
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(client.close())
            raise

    async def aclose(self) -> None:
        """Close the client and cluster this executor started (not a client it was given)."""
        self._closed = True
        for handle in list(self._shared):
            handle.release()
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await cluster.close()

    # -- calls -----------------------------------------------------------------------

    async def run(self, fn: Callable[..., _R], *args: Any, **kwargs: Never) -> _R:
        """Run ``fn(*args)`` as one Dask task and return its result (re-raising its error)."""
        if kwargs:
            raise keywords_refused("DaskExecutor.run", fn, args, kwargs, ())
        check_plain(fn)
        client = await self._ensure_client()
        carrier = _carrier()
        split = _split_shared(fn, args)
        if split is None:
            future = client.submit(traced(fn, carrier), *args, pure=False)
        else:
            inner, kw, every, was_shared = split
            inner = traced(inner, carrier)
            future = client.submit(_call_shared, inner, kw, was_shared, every, pure=False)
        return await self._wait(client, [future], future.result)  # type: ignore[no-any-return]

    async def share(self, obj: _T) -> Shared[_T]:
        """Scatter ``obj`` to the cluster once (``client.scatter``); pass the handle to
        calls instead of ``obj``, in their arguments or a ``functools.partial``'s.

        Calls read ``handle.value``. Released by ``handle.release()``, a ``with``
        block, the last reference going, or ``aclose()``.
        """
        client = await self._ensure_client()
        future = await client.scatter(obj, hash=False)
        handle = Shared(obj, future, _release_future)
        self._shared.add(handle)
        return handle

    async def map(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | AsyncIterable[_T],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> list[_R]:
        """``fn`` over every item, small calls batched into chunks (one Dask task each)."""
        return await collect_items(self._chunks(fn, iterable, chunksize, ordered))

    def imap(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | AsyncIterable[_T],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> AsyncGenerator[_R, None]:
        """Yield ``fn(item)`` for each item; a bounded number of chunks is in flight.

        Leaving the loop early cancels the chunks in flight (``client.cancel``;
        with ``hard_stop``, their worker processes are killed).
        """
        return iterate_items(self._chunks(fn, iterable, chunksize, ordered))

    def _chunks(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        chunksize: int | None,
        ordered: bool,
    ) -> AsyncGenerator[list[Any], None]:
        """Check the arguments now (at the call site), then stream result chunks."""
        if self._closed:
            raise ClosedError(f"{self!r} is closed; create a new executor")
        check_plain(fn)
        check_map_arguments(iterable, chunksize, ordered)
        return self._stream(fn, iterable, chunksize, ordered)

    async def _stream(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        chunksize: int | None,
        ordered: bool,
    ) -> AsyncGenerator[list[Any], None]:
        client = await self._ensure_client()
        workers = max(1, len((await client.scheduler.identity()).get("workers", {})))
        if chunksize is None:
            total = len(iterable) if isinstance(iterable, Sized) else None
            chunksize = max(1, math.ceil(total / (4 * workers))) if total else 64
        sizer = ChunkSizer(chunksize, None, workers)
        runner = _DaskChunks(self, client)
        chunks = stream_chunks(runner, fn, iterable, sizer, 4 * workers, ordered)
        async with contextlib.aclosing(chunks):
            async for values in chunks:
                yield values

    async def _wait(self, client: Client, futures: list[Future], result: Callable[[], Any]) -> Any:
        try:
            return await result()
        except asyncio.CancelledError:
            await self._cancel(client, futures)
            raise

    async def _cancel(self, client: Client, futures: list[Future]) -> None:
        """Stop waiting (``client.cancel``); with ``hard_stop``, kill their worker processes."""
        keys = {f.key for f in futures}
        running: list[str] = []
        if self._hard_stop:
            processing = await client.processing()
            running = [addr for addr, tasks in processing.items() if keys.intersection(tasks)]
        await client.cancel(futures, force=True)
        emit("info", "bridge.dask_cancelled", tasks=len(keys), restarted=running)
        if running:
            await _stop_workers(client, running)


def _release_future(future: Any) -> None:
    with contextlib.suppress(Exception):  # the client may be closed already
        future.release()


class _DaskChunks:
    """The Dask side of a chunked ``map``/``imap`` (see ``_chunks.stream_chunks``)."""

    def __init__(self, executor: DaskExecutor, client: Client) -> None:
        self.executor = executor
        self.client = client
        self.done: Any = None  # distributed.as_completed, for unordered streams
        self.watched: set[Any] = set()
        # The chunk whose values were read last: the stream still holds its future
        # when it cancels, so a worker lost then would make Dask compute it again.
        self.last_read: Future | None = None

    def submit(self, fn: Any, items: Sequence[Any]) -> Future:
        carrier = _carrier()
        split = _split_shared(fn, ())
        if split is not None:
            inner, kw, lead, was_shared = split
            inner = traced(inner, carrier)
            return self.client.submit(_chunk_shared, inner, kw, was_shared, lead, items, pure=False)
        (future,) = self.client.map(_apply_chunk, [traced(fn, carrier)], [items], pure=False)
        return future

    async def next_done(self, inflight: collections.deque[Future], ordered: bool) -> Future:
        if ordered:
            return inflight.popleft()  # result() waits for it
        if self.done is None:
            self.done = _distributed().as_completed([], with_results=False)
        for future in inflight:
            if future.key not in self.watched:
                self.watched.add(future.key)
                self.done.add(future)
        future = await self.done.__anext__()
        self.watched.discard(future.key)
        inflight.remove(future)
        return future

    async def result(self, future: Future) -> tuple[list[Any], BaseException | None, float | None]:
        values = await self.executor._wait(self.client, [future], future.result)
        self.last_read = future
        return values, None, None

    async def cancel(self, futures: list[Future]) -> None:
        """Cancel the chunks in flight and forget the last one read: a hard stop
        kills the worker holding it, and Dask would run it again for the future."""
        done = [] if self.last_read is None else [self.last_read]
        await self.executor._cancel(self.client, [*futures, *done])
