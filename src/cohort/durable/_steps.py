"""Steps: running a child or step that is not recorded as done and recording how it
ends, effects ("started" committed first), transactional sinks, names and values."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Literal, TypeVar, overload

from cohort.durable._codec import Codec, decode_error, encode_error
from cohort.durable._context import name_of, path_var
from cohort.durable._crash import Crash
from cohort.durable._replay import FlowReplay, GroupState
from cohort.durable._store import AmbiguousStepError, DurableError, StepRecord, StepRow, Store

__all__ = ["DONE", "Steps", "ValueEncodingError"]

T = TypeVar("T")

DONE = ("ok", "error", "cancelled")


class ValueEncodingError(DurableError, TypeError):
    """A step's value could not be encoded by the run's codec."""


class Steps:
    """A durable run's steps (the base of :class:`DurableRun`, which keeps the record
    of groups, children and flows, and commits)."""

    run_id: str
    store: Store
    codec: Codec
    _on_ambiguous: Literal["fail", "rerun", "skip"]
    _claimed: set[str]
    _values: dict[str, bytes]
    _recorded: dict[str, StepRow]
    _replayed: set[str]
    _cut: set[str]
    _open: dict[tuple[str, ...], list[GroupState]]
    _crash: Crash

    def _put(self, record: StepRecord) -> None:
        raise NotImplementedError

    def _after_put(self) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _note_closed(self, parent: tuple[str, ...]) -> None:
        raise NotImplementedError

    def _note_cancelled(self, state: GroupState, path: str, started: float) -> None:
        raise NotImplementedError

    def _encode(self, path: str, value: Any) -> bytes:
        try:
            return self.codec.encode(value)
        except Exception as exc:
            raise ValueEncodingError(
                f"durable step {path!r} of run {self.run_id!r} returned a value that "
                f"{self.codec!r} cannot encode ({type(exc).__name__}: {exc}); return an "
                "encodable value or pass another codec= to the run"
            ) from exc

    def _decode(self, row: StepRow) -> Any:
        """A recorded step's value (its recorded error raised)."""
        _, status, value, _, _ = row
        assert value is not None
        if status == "ok":
            return self.codec.decode(value)
        raise decode_error(value)

    # -- names --------------------------------------------------------------------------

    def _claim(self, parent: tuple[str, ...], name: str, what: str) -> str:
        """Name ``name`` in ``parent`` (refused if taken there); its path."""
        path = "/".join((*parent, name))
        if path in self._claimed:
            where = "/".join(parent) or "the run's body"
            raise ValueError(
                f"durable run {self.run_id!r}: a {what} named {name!r} already exists in "
                f"{where}; names must be unique there: pass name= to tell them apart"
            )
        self._claimed.add(path)
        return path

    async def _execute(
        self,
        path: str,
        work: Coroutine[Any, Any, Any] | Callable[[], Any],
        record: StepRow | None,
        state: GroupState | None,
        effect: bool = False,
        order: FlowReplay | None = None,
        parts: tuple[str, ...] | None = None,
    ) -> Any:
        """Run a child or step that is not recorded as done, and record how it ends
        (``order``: a flow's node, its completion counted there)."""
        attempt = 1 if record is None else record[4] + 1
        started = time.time()
        if record is not None and record[1] == "started":
            if self._on_ambiguous == "fail":
                if inspect.iscoroutine(work):
                    work.close()
                raise AmbiguousStepError(
                    f"durable step {path!r} of run {self.run_id!r} started an external "
                    "effect before a crash and recorded no result: the effect may or may "
                    'not have happened; pass on_ambiguous="rerun" or "skip" to the run '
                    "once you know which"
                )
            if self._on_ambiguous == "skip":
                if inspect.iscoroutine(work):
                    work.close()
                value = None
                self._record_ok(path, value, attempt, started, state)
                return value
        if effect:
            self.store.put_step(
                StepRecord(self.run_id, path, "started", None, 0, attempt, started, None)
            )
            self._flush()  # "started" is durable before the effect can begin
            self._crash.at("before-effect")
        parts = tuple(path.split("/")) if parts is None else parts
        token = path_var.set(parts)
        try:
            if inspect.iscoroutine(work):
                value = await work
            else:
                assert callable(work)
                value = work()
                if inspect.isawaitable(value):
                    value = await value
        except asyncio.CancelledError:
            self._cut.add(path)
            if state is not None:
                self._note_cancelled(state, path, started)
            raise
        except Exception as exc:
            seq = state.take_seq() if state is not None else order.take_seq() if order else -1
            self._put(
                StepRecord(
                    self.run_id,
                    path,
                    "error",
                    encode_error(exc),
                    seq,
                    attempt,
                    started,
                    time.time(),
                )
            )
            raise
        finally:
            path_var.reset(token)
        if parts in self._open:
            self._note_closed(parts)
        if self._crash.point:
            self._crash.at("after-effect")
        self._record_ok(path, value, attempt, started, state, order)
        return value

    def _record_ok(
        self,
        path: str,
        value: Any,
        attempt: int,
        started: float,
        state: GroupState | None,
        order: FlowReplay | None = None,
    ) -> None:
        data = self._encode(path, value)
        seq = -1 if order is None else order.take_seq()
        if state is not None:
            seq = state.take_seq()
            state.ok_order.append(path)
        self.store.put_step(
            StepRecord(self.run_id, path, "ok", data, seq, attempt, started, time.time())
        )
        self._after_put()

    # -- steps --------------------------------------------------------------------------

    @overload
    async def step(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        name: str | None = None,
        effect: bool = False,
    ) -> T: ...

    @overload
    async def step(
        self, fn: Callable[..., T], *args: Any, name: str | None = None, effect: bool = False
    ) -> T: ...

    async def step(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        effect: bool = False,
    ) -> Any:
        """Run ``fn(*args)`` once as a recorded step named ``name`` (default: the
        function's name) under the current path; on resume its recorded value is
        returned (its recorded error raised) without calling ``fn``.

        ``effect=True`` marks an external effect: "started" is committed before
        ``fn`` runs, so a crash in between is reported on resume (``on_ambiguous``).
        """
        if name is None or type(name) is not str or not name or "/" in name:
            name = name_of(fn, name, "step")
        parent = path_var.get()
        if parent in self._open:
            self._note_closed(parent)
        path = "/".join(parent) + "/" + name if parent else name
        claimed = self._claimed
        if path in claimed:
            self._claim(parent, name, "step")  # a duplicate: refused
        claimed.add(path)
        data = self._values.get(path)
        if data is not None:  # it replays (seen so by _check_divergence: no note kept)
            return self.codec.decode(data)
        record = self._recorded.get(path)
        if record is not None:
            status = record[1]
            if status in DONE:
                self._replayed.add(path)
                if status == "cancelled":
                    raise asyncio.CancelledError
                return self._decode(record)
        parts = (*parent, name)
        return await self._execute(path, lambda: fn(*args), record, None, effect, parts=parts)

    async def write_rows(self, sql: str, rows: Iterable[Sequence[Any]], *, name: str) -> int:
        """A transactional sink: a step named ``name`` that runs
        ``executemany(sql, rows)`` on the ledger's SQLite database in the same
        transaction as its own record, so the rows are written exactly once, even
        across kill -9 (a resume finds the step recorded and writes nothing).
        Returns the number of rows (recorded). The statement is checked here
        (``ValueError``); with a store that is not SQLite, ``TypeError``."""
        name = name_of(None, name, "write_rows")
        parent = path_var.get()
        self._note_closed(parent)
        path = self._claim(parent, name, "step")
        data = self._values.get(path)
        if data is not None:
            self._replayed.add(path)
            value: int = self.codec.decode(data)
            return value
        record = self._recorded.get(path)
        batch = [tuple(row) for row in rows]
        started = time.time()
        attempt = 1 if record is None else record[4] + 1
        data = self._encode(path, len(batch))
        # Buffered together, with no await in between: one commit holds both.
        self.store.execute_in_commit(sql, batch)
        self.store.put_step(
            StepRecord(self.run_id, path, "ok", data, -1, attempt, started, started)
        )
        self._crash.at("after-effect")
        self._after_put()
        return len(batch)
