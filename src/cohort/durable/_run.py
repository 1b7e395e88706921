"""Durable runs: children and steps recorded by structural path, replayed on resume.

``run()`` owns a run in a store for the ``async with`` block. While it is
active, ``TaskGroup.spawn`` calls the run's hook (``cohort._core._group.spawn_hook``,
a context variable): the child is named by its path (run / groups / child
name), never by its start order, and its coroutine is wrapped so that a child
recorded as finished is not run again (its value or error is returned, in the
recorded completion order), and one that finishes is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import re
import signal
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from contextvars import ContextVar, Token
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from cohort._core._group import TaskGroup, close_coroutines, spawn_hook
from cohort._core._policies import Decision, Quorum
from cohort.durable._codec import Codec, PickleCodec, decode_error, encode_error
from cohort.durable._postgres import PostgresStore
from cohort.durable._sqlite import SQLiteStore
from cohort.durable._store import (
    AmbiguousStepError,
    DecisionRecord,
    DivergenceError,
    DurableError,
    StepRecord,
    StepRow,
    Store,
)

__all__ = [
    "DurableRun",
    "open_store",
    "FlowReplay",
    "ItemLedger",
    "ValueEncodingError",
    "current_run",
    "epoch",
    "idempotency_key",
    "run",
    "step",
    "write_rows",
]

T = TypeVar("T")

_run_var: ContextVar[DurableRun | None] = ContextVar("cohort_durable_run", default=None)
# The structural path of the code running now: () in a run's body, else the
# segments of the child or step it runs in.
_path_var: ContextVar[tuple[str, ...]] = ContextVar("cohort_durable_path", default=())
_DEFAULT_GROUP_NAME = re.compile(r"TaskGroup-\d+")
_FLUSH_AT = 512  # records pending: commit now rather than at the end of the iteration
# A pipeline's item ledger commits every _LEDGER_EVERY seconds, or at _LEDGER_AT items.
_LEDGER_EVERY = 0.02
_LEDGER_AT = 4096
_DONE = ("ok", "error", "cancelled")

# Injected crash points for the crash-loop harness: COHORT_DURABLE_CRASH=point[@n]
# SIGKILLs the process the n-th time (1 by default) it reaches that point.
CRASH_POINTS = ("before-effect", "after-effect", "in-commit", "decision")


def open_store(store: Store | str | os.PathLike[str], sync: Literal["group", "step"]) -> Store:
    """The store ``store=`` names: a :class:`Store` as it is, a ``postgresql://`` URL
    (a :class:`PostgresStore`), or the path of a SQLite database."""
    if isinstance(store, Store):
        return store
    if isinstance(store, str) and store.startswith(("postgresql://", "postgres://")):
        return PostgresStore(store, sync=sync)
    if isinstance(store, str | os.PathLike):
        return SQLiteStore(Path(store), sync=sync)
    raise TypeError(
        "store= takes a cohort.durable.Store, a SQLite database path or a "
        f"postgresql:// URL, got {store!r}"
    )


class ValueEncodingError(DurableError, TypeError):
    """A step's value could not be encoded by the run's codec."""


class _Crash:
    """The crash point this process was told to die at, if any."""

    def __init__(self) -> None:
        spec = os.environ.get("COHORT_DURABLE_CRASH", "")
        point, _, count = spec.partition("@")
        self.point = point
        self.left = int(count or 1)

    def at(self, point: str) -> None:
        if point == self.point:
            self.left -= 1
            if self.left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


class _GroupState:
    """What a run knows of one task group: its path, and its replay of the record."""

    __slots__ = (
        "completed",
        "ended",
        "group",
        "next_seq",
        "ok_order",
        "path",
        "slots",
        "timeout_seq",
    )

    def __init__(self, group: TaskGroup, path: tuple[str, ...], next_seq: int) -> None:
        self.group = group
        self.path = path
        self.next_seq = next_seq
        # seq -> a future done once that recorded child has replayed
        self.slots: dict[int, asyncio.Future[None]] = {}
        self.ok_order: list[str] = []  # paths that succeeded, in completion order
        self.timeout_seq: int | None = None  # a recorded partial timeout fired here
        self.completed = False
        self.ended = False  # the record says this group closed (a new child diverges)

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq


class ItemLedger:
    """A durable pipeline's item ledger: source offset -> the stage it reached.

    A stage notes an item's new value in memory (``reach``, ``drop``,
    ``write``); the run commits what moved since its last commit as one row
    (path ``<pipeline>/#<n>``, ``seq`` n) whose value is the list of
    ``[offset, stage reached (1-based), dropped, value]``: an item that moved
    through several stages meanwhile is listed once. ``recorded`` is what a
    resumed run found: offset -> (stage, dropped, value).
    """

    __slots__ = ("batches", "dirty", "keep_last", "prefix", "recorded", "run", "stages")

    def __init__(
        self,
        run: DurableRun,
        prefix: str,
        stages: int,
        keep_last: bool,
        recorded: dict[int, tuple[int, bool, Any]],
    ) -> None:
        self.run = run
        self.prefix = prefix
        self.stages = stages
        self.keep_last = keep_last
        self.recorded = recorded
        self.batches = 0
        self.dirty: dict[int, tuple[int, bool, Any]] = {}

    def reach(self, offset: int, stage: int, value: Any) -> None:
        """Item ``offset`` left stage ``stage`` (1-based) with ``value``."""
        dirty = self.dirty
        dirty[offset] = (stage, False, value)
        if len(dirty) == 1 or len(dirty) >= _LEDGER_AT:
            self.run.touch(len(dirty))

    def drop(self, offset: int, stage: int) -> None:
        """Stage ``stage`` dropped item ``offset``: it is finished."""
        dirty = self.dirty
        dirty[offset] = (stage, True, None)
        self.run.touch(len(dirty))

    def write(self, offset: int, stage: int, value: Any, sql: str, rows: list[Any]) -> None:
        """A transactional sink: ``rows`` written by ``sql`` in the same commit as
        item ``offset`` reaching ``stage``: exactly once."""
        if rows:
            self.run.store.execute_in_commit(sql, rows)
        self.dirty[offset] = (stage, False, value)  # no await since: one commit holds both
        self.run.crash_point("after-effect")
        self.run.touch(len(self.dirty))


class FlowReplay:
    """What a run knows of one flow it runs: the path of its nodes, and the
    replay of their recorded completions (in order)."""

    __slots__ = ("next_seq", "path", "slots")

    def __init__(self, path: tuple[str, ...], next_seq: int) -> None:
        self.path = path
        self.next_seq = next_seq
        # seq -> a future done once that recorded node has replayed
        self.slots: dict[int, asyncio.Future[None]] = {}

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq


class DurableRun:
    """An open durable run (made by :func:`run`); use it with ``async with``."""

    def __init__(
        self,
        run_id: str,
        store: Store | str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        sync: Literal["group", "step"] = "group",
        wait: float = 0.0,
        steal: bool = False,
        on_divergence: Literal["fail", "discard"] = "fail",
        on_ambiguous: Literal["fail", "rerun", "skip"] = "fail",
    ) -> None:
        if not isinstance(run_id, str) or not run_id:
            raise TypeError(f"run_id must be a non-empty str, got {run_id!r}")
        if on_divergence not in ("fail", "discard"):
            raise ValueError(f'on_divergence must be "fail" or "discard", got {on_divergence!r}')
        if on_ambiguous not in ("fail", "rerun", "skip"):
            raise ValueError(
                f'on_ambiguous must be "fail", "rerun" or "skip", got {on_ambiguous!r}'
            )
        if sync not in ("group", "step"):
            raise ValueError(f'sync must be "group" or "step", got {sync!r}')
        self._owns_store = not isinstance(store, Store)
        self.store = open_store(store, sync)
        self.run_id = run_id
        self.codec: Codec = PickleCodec() if codec is None else codec
        self.sync = sync
        self._wait = wait
        self._steal = steal
        self._on_divergence = on_divergence
        self._on_ambiguous = on_ambiguous
        self.epoch = 0
        # What the ledger holds, by path: the encoded value of each plain step
        # recorded ok (decoded when it replays), and every other step's row.
        self._values: dict[str, bytes] = {}
        self._recorded: dict[str, StepRow] = {}
        self._decisions: dict[tuple[str, str], DecisionRecord] = {}
        # Every path named in this run (steps, children, groups, flows, nodes,
        # pipelines): names are unique in their scope, and a recorded path that
        # is not here was never reached.
        self._claimed: set[str] = set()
        self._replayed: set[str] = set()
        # Children and steps cancelled in this run: what they recorded inside before a
        # crash was not reached this time (a loser cut short sooner), not a divergence.
        self._cut: set[str] = set()
        self._unnamed_groups: dict[tuple[str, ...], int] = {}
        self._groups: weakref.WeakKeyDictionary[TaskGroup, _GroupState] = (
            weakref.WeakKeyDictionary()
        )
        self._max_seq: dict[str, int] | None = None  # group path -> its highest recorded seq
        # Groups not yet seen closed, by the path they were opened in.
        self._open: dict[tuple[str, ...], list[_GroupState]] = {}
        self._flush_scheduled = False
        self._failure: BaseException | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tokens: tuple[Token[Any], Token[Any], Token[Any]] | None = None
        self._crash = _Crash()
        self._ledgers: list[ItemLedger] = []
        self._ledger_timer: asyncio.TimerHandle | None = None
        self.resumed = False

    def __repr__(self) -> str:
        return f"<DurableRun {self.run_id!r} epoch={self.epoch} store={self.store!r}>"

    # -- entering and leaving -----------------------------------------------------------

    async def __aenter__(self) -> DurableRun:
        if self._tokens is not None:
            raise RuntimeError(f"{self!r} is already open")
        if self._wait > 0:
            self.epoch = await asyncio.to_thread(
                self.store.acquire, self.run_id, wait=self._wait, steal=self._steal
            )
        else:
            self.epoch = self.store.acquire(self.run_id, wait=0.0, steal=self._steal)
        try:
            self._values, self._recorded, decisions = self.store.load_index(self.run_id)
        except BaseException:
            self.store.release(self.run_id)
            raise
        self.resumed = bool(self._values or self._recorded)
        self._decisions = {(d.path, d.kind): d for d in decisions}
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        if self._crash.point == "in-commit" and isinstance(self.store, SQLiteStore | PostgresStore):
            self.store.before_commit = lambda: self._crash.at("in-commit")
        self._tokens = (_run_var.set(self), _path_var.set(()), spawn_hook.set(self._on_spawn))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tokens is not None
        run_token, path_token, hook_token = self._tokens
        spawn_hook.reset(hook_token)
        _path_var.reset(path_token)
        _run_var.reset(run_token)
        self._tokens = None
        if self._ledger_timer is not None:
            self._ledger_timer.cancel()
            self._ledger_timer = None
        try:
            for ledger in self._ledgers:
                if ledger.dirty:
                    self._drain(ledger)
            if self._failure is not None:
                raise self._failure
            if exc is None:
                self._note_closed(())
                self._check_divergence()
                self.store.finish(self.run_id, self.epoch, "done")
            elif isinstance(exc, Exception):
                self.store.finish(self.run_id, self.epoch, "failed")
            else:  # cancelled or interrupted: the run stays resumable as it is
                self.store.flush(self.run_id, self.epoch)
        finally:
            self.store.release(self.run_id)
            if self._owns_store:
                self.store.close()

    def _check_divergence(self) -> None:
        missing = []
        claimed, values, replayed, cut = self._claimed, self._values, self._replayed, self._cut

        def replayed_at(path: str) -> bool:  # a plain step recorded ok replays when reached
            return path in replayed or path in cut or (path in values and path in claimed)

        for path in [*values, *self._recorded]:
            if path in claimed:
                continue
            parts = path.split("/")
            if any(replayed_at("/".join(parts[:i])) for i in range(1, len(parts))):
                continue  # inside one that replayed (its insides never ran again) or was cut
            missing.append(path)
        if not missing:
            return
        if self._on_divergence == "discard":
            self.store.discard_steps(self.run_id, sorted(missing))
            return
        shown = ", ".join(sorted(missing)[:10]) + (" ..." if len(missing) > 10 else "")
        raise DivergenceError(
            f"run {self.run_id!r} was resumed by code whose structure differs from the "
            f"record: {len(missing)} recorded step(s) no longer exist ({shown}); fix the "
            'code, or pass on_divergence="discard" to drop the steps that no longer match'
        )

    # -- recording ----------------------------------------------------------------------

    def _put(self, record: StepRecord) -> None:
        self.store.put_step(record)
        self._after_put()

    def _after_put(self) -> None:
        if self.sync == "step" or self.store.pending >= _FLUSH_AT:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_soon)

    def _flush(self) -> None:
        for ledger in self._ledgers:
            if ledger.dirty:
                self._drain(ledger)
        self.store.flush(self.run_id, self.epoch)

    def _drain(self, ledger: ItemLedger) -> None:
        """Buffer what a pipeline's ledger saw move since the last commit: one row,
        ``<pipeline>/#<n>``, whose value lists ``[offset, stage, dropped, value]``."""
        dirty, ledger.dirty = ledger.dirty, {}
        last, keep_last = ledger.stages, ledger.keep_last
        batch = [
            [offset, stage, dropped, None if stage == last and not keep_last else value]
            for offset, (stage, dropped, value) in dirty.items()
        ]
        ledger.batches += 1
        path = f"{ledger.prefix}#{ledger.batches}"
        data = self._encode(path, batch)
        now = time.time()
        self.store.put_rows([(self.run_id, path, "ok", data, ledger.batches, 1, now, now)])

    def touch(self, pending: int) -> None:
        """Note that ``pending`` items of a pipeline's ledger wait in memory: they are
        committed in groups, every ``_LEDGER_EVERY`` seconds or ``_LEDGER_AT`` items
        (an item that moves through several stages meanwhile is one row)."""
        if self.sync == "step" or pending >= _LEDGER_AT:
            self._flush()
        elif self._ledger_timer is None:
            assert self._loop is not None
            self._ledger_timer = self._loop.call_later(_LEDGER_EVERY, self._ledger_due)

    def _ledger_due(self) -> None:
        self._ledger_timer = None
        self._flush_soon()

    def crash_point(self, point: str) -> None:
        """The crash-loop harness's injected point ``point`` (see ``CRASH_POINTS``)."""
        self._crash.at(point)

    def decode(self, record: StepRecord) -> Any:
        """A recorded step's value (its recorded error raised)."""
        return self._decode((record.path, record.status, record.value, record.seq, 0))

    def item_ledger(self, name: str, stages: int, *, keep_last: bool = True) -> ItemLedger:
        """The item ledger of a pipeline named ``name`` in the current path, with
        ``stages`` stages: what each source offset reached, recorded by this run."""
        name = _name_of(None, name, "a durable pipeline")
        parent = _path_var.get()
        self._note_closed(parent)
        path = self._claim(parent, name, "pipeline")
        self._replayed.add(path)  # its items are the ledger's, not children
        prefix = path + "/"
        batches = []
        for key, row in self._recorded.items():
            if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1] == "#":
                batches.append(row)
        batches.sort(key=lambda r: r[3])  # by seq
        recorded: dict[int, tuple[int, bool, Any]] = {}
        for row in batches:
            for offset, stage, dropped, value in self._decode(row):
                recorded[offset] = (stage, dropped, value)
        ledger = ItemLedger(self, prefix, stages, keep_last, recorded)
        ledger.batches = batches[-1][3] if batches else 0  # new batches follow these
        self._ledgers.append(ledger)
        return ledger

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        try:
            self._flush()
        except BaseException as exc:  # fenced, disk full: the run stops and reports it
            if self._failure is None:
                self._failure = exc
            if self._task is not None:
                self._task.cancel()

    def flush(self) -> None:
        """Commit every pending record now."""
        self._flush()

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

    def _next_seq(self, group_path: str) -> int:
        """The seq after the highest recorded in the group at ``group_path`` (the
        index is built when a run first opens a group)."""
        max_seq = self._max_seq
        if max_seq is None:
            max_seq = self._max_seq = {}
            for path, _, _, seq, _ in self._recorded.values():
                if seq >= 0:
                    parent = path.rpartition("/")[0]
                    if max_seq.get(parent, -1) < seq:
                        max_seq[parent] = seq
        return max_seq.get(group_path, -1) + 1

    def _group_state(self, group: TaskGroup) -> _GroupState:
        state = self._groups.get(group)
        if state is None:
            parent = _path_var.get()
            name = group.name
            if _DEFAULT_GROUP_NAME.fullmatch(name):
                n = self._unnamed_groups.get(parent, 0) + 1
                self._unnamed_groups[parent] = n
                name = f"group-{n}"
            elif "/" in name:
                raise ValueError(f"a group in a durable run has a name without '/': {name!r}")
            self._note_closed(parent)
            key = self._claim(parent, name, "group")
            path = (*parent, name)
            state = _GroupState(group, path, self._next_seq(key))
            timeout = self._decisions.get((key, "timeout"))
            if timeout is not None:
                state.timeout_seq = timeout.seq
            state.ended = (key, "end") in self._decisions
            self._groups[group] = state
            if not state.ended:
                self._open.setdefault(parent, []).append(state)
        return state

    def _on_spawn(
        self, group: TaskGroup, fn: object, name: str | None
    ) -> tuple[str, Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]]]:
        try:
            name = _name_of(fn, name, "spawn")
            state = self._group_state(group)
            path = self._claim(state.path, name, "child")
        except BaseException:
            close_coroutines((fn,))
            raise
        record = self._recorded.get(path)
        if state.ended and record is None and self._on_divergence == "fail":
            close_coroutines((fn,))
            raise DivergenceError(
                f"run {self.run_id!r} was resumed by code whose structure differs from the "
                f"record: a new child {path!r} appears in group {'/'.join(state.path)!r}, "
                "which the record shows closed without it; fix the code, or pass "
                'on_divergence="discard" to run it all the same'
            )
        if record is not None and record[1] in _DONE:
            assert self._loop is not None
            loop = self._loop
            done = record

            def replay(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
                coro.close()
                self._replayed.add(path)  # its insides never run again, even if cancelled
                slot = loop.create_future()
                state.slots[done[3]] = slot  # once the child exists: its end sets it
                return _Replay(self._replay_child(state, done, slot), slot)

            return name, replay

        def live(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
            return self._live_child(state, path, coro, record)

        return name, live

    # -- flows --------------------------------------------------------------------------

    def flow_replay(self, name: str) -> FlowReplay:
        """Open the flow named ``name`` in the current path: its nodes' records, in
        their recorded completion order (``flow_node`` replays them so)."""
        name = _name_of(None, name, "a durable flow")
        parent = _path_var.get()
        self._note_closed(parent)
        self._claim(parent, name, "flow")
        path = (*parent, name)
        prefix = "/".join(path) + "/"
        assert self._loop is not None
        replay = FlowReplay(path, 0)
        for key, row in self._recorded.items():
            seq = row[3]
            if key.startswith(prefix) and "/" not in key[len(prefix) :] and seq >= 0:
                if row[1] in ("ok", "error"):
                    replay.slots[seq] = self._loop.create_future()
                replay.next_seq = max(replay.next_seq, seq + 1)
        return replay

    def flow_scope(self, replay: FlowReplay) -> tuple[Token[Any], Token[Any]]:
        """Enter ``replay``'s flow: its own tasks are not recorded as children (its
        nodes are, by ``flow_node``); reset with ``flow_scope_end``."""
        return (_path_var.set(replay.path), spawn_hook.set(None))

    def flow_scope_end(self, tokens: tuple[Token[Any], Token[Any]]) -> None:
        path_token, hook_token = tokens
        spawn_hook.reset(hook_token)
        _path_var.reset(path_token)

    async def flow_node(
        self, replay: FlowReplay, name: str, call: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Run a flow's node ``call()`` once as the step ``<flow>/<name>``: a recorded
        one replays after the nodes recorded as ending before it; a live one starts
        after every recorded one has replayed (so a join sees the same ones first)."""
        path = self._claim(replay.path, name, "node")
        record = self._recorded.get(path)
        if record is not None and record[3] in replay.slots:
            at = record[3]
            slot = replay.slots[at]
            self._replayed.add(path)
            try:
                earlier = [s for seq, s in replay.slots.items() if seq < at]
                await _after_replays(earlier)
                return self._decode(record)
            finally:
                if not slot.done():
                    slot.set_result(None)
        await _after_replays(list(replay.slots.values()))
        hook = self._on_spawn

        async def work() -> Any:
            token = spawn_hook.set(hook)  # the node's own groups are recorded again
            try:
                return await call()
            finally:
                spawn_hook.reset(token)

        return await self._execute(path, work(), record, None, order=replay)

    # -- children -----------------------------------------------------------------------

    async def _replay_child(
        self, state: _GroupState, record: StepRow, slot: asyncio.Future[None]
    ) -> Any:
        _, status, _, at, _ = record
        try:
            earlier = [slot for seq, slot in state.slots.items() if seq < at]
            await _after_replays(earlier)
            if status == "cancelled":
                if state.timeout_seq is not None and at >= state.timeout_seq:
                    state.group.cancel()  # the recorded timeout fires here
                await _cancel_self()
            return self._decode(record)
        finally:
            if not slot.done():
                slot.set_result(None)

    async def _live_child(
        self,
        state: _GroupState,
        path: str,
        coro: Coroutine[Any, Any, Any],
        record: StepRow | None,
    ) -> Any:
        group = state.group
        try:
            await _after_replays(list(state.slots.values()))
            if state.timeout_seq is not None:
                group.cancel()  # the recorded timeout had fired: only recorded children count
                await _cancel_self()
        except asyncio.CancelledError:
            coro.close()
            self._cut.add(path)
            self._note_cancelled(state, path, time.time())
            raise
        return await self._execute(path, coro, record, state)

    def _note_cancelled(self, state: _GroupState, path: str, started: float) -> None:
        """A child was cancelled: recorded only when its group's decision cancelled it
        (a loser, or a partial timeout), not when the run itself is being cancelled."""
        stats = state.group.statistics()
        if stats.decision is Decision.CONTINUE or stats.cancelled_from_outside:
            return
        seq = state.take_seq()
        group_path = "/".join(state.path)
        if stats.timed_out and (group_path, "timeout") not in self._decisions:
            self._journal(group_path, "timeout", {"after": len(state.ok_order)}, seq)
        policy = state.group.policy
        if isinstance(policy, Quorum) and (group_path, "winners") not in self._decisions:
            self._journal(group_path, "winners", state.ok_order[: policy.k], seq)
        self._put(StepRecord(self.run_id, path, "cancelled", None, seq, 1, started, time.time()))

    def _note_closed(self, parent: tuple[str, ...]) -> None:
        """Journal the end of the groups opened in ``parent`` that have closed since
        (before anything later in ``parent`` is recorded): a resumed run that spawns
        a child the record does not have into a closed group has diverged."""
        states = self._open.get(parent)
        if not states:
            return
        still = []
        for state in states:
            stats = state.group.statistics()
            if stats.phase != "closed":
                still.append(state)
            elif not stats.cancelled_from_outside:  # its unrecorded children re-run
                self._journal("/".join(state.path), "end", {"children": stats.children}, -1)
                self._after_put()
        self._open[parent] = still

    def _journal(self, path: str, kind: str, value: object, seq: int) -> None:
        record = DecisionRecord(self.run_id, path, kind, json.dumps(value), seq)
        self._decisions[(path, kind)] = record
        self.store.put_decision(record)
        self._crash.at("decision")

    async def _execute(
        self,
        path: str,
        work: Coroutine[Any, Any, Any] | Callable[[], Any],
        record: StepRow | None,
        state: _GroupState | None,
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
        token = _path_var.set(parts)
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
            _path_var.reset(token)
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
        state: _GroupState | None,
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
            name = _name_of(fn, name, "step")
        parent = _path_var.get()
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
            if status in _DONE:
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
        name = _name_of(None, name, "write_rows")
        parent = _path_var.get()
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


class _Replay(Coroutine[Any, Any, Any]):
    """A recorded child's replay (``_replay_child``), which sets ``slot`` when it ends,
    even when it never began: a child cancelled before its first step (its task
    cancelled, or dropped from its group's queue) is closed without running, and
    the children recorded after it must not wait for it."""

    __slots__ = ("_coro", "_slot")

    def __init__(self, coro: Coroutine[Any, Any, Any], slot: asyncio.Future[None]) -> None:
        self._coro = coro
        self._slot = slot

    def _release(self) -> None:
        if not self._slot.done():
            self._slot.set_result(None)

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, *exc: Any) -> Any:
        try:
            return self._coro.throw(*exc)
        except BaseException:
            self._release()  # it ended (thrown into before it began: without running)
            raise

    def close(self) -> None:
        self._coro.close()
        self._release()

    def __await__(self) -> Any:
        return self._coro.__await__()

    @property
    def cr_frame(self) -> Any:  # seen by the hang analysis, as a coroutine's
        return getattr(self._coro, "cr_frame", None)

    @property
    def cr_await(self) -> Any:
        return getattr(self._coro, "cr_await", None)


async def _after_replays(slots: list[asyncio.Future[None]]) -> None:
    """Wait until these recorded children have replayed and their group has seen them
    end: a replayed child's slot is set just before it returns, so one more turn of
    the loop runs its task's done callbacks (the group's bookkeeping) first."""
    if not slots:
        return
    for slot in slots:
        if not slot.done():
            await asyncio.shield(slot)
    await asyncio.sleep(0)


async def _cancel_self() -> None:
    """End the current task as cancelled (a real cancellation, not a stray one)."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)


def _name_of(fn: object, name: str | None, where: str) -> str:
    """The name given, or the function's; checked."""
    if name is None:
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"{where}() in a durable run needs name= for {fn!r}")
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"a name in a durable run is a non-empty string without '/', got {name!r}")
    return name


def run(
    run_id: str,
    *,
    store: Store | str | os.PathLike[str],
    codec: Codec | None = None,
    sync: Literal["group", "step"] = "group",
    wait: float = 0.0,
    steal: bool = False,
    on_divergence: Literal["fail", "discard"] = "fail",
    on_ambiguous: Literal["fail", "rerun", "skip"] = "fail",
) -> DurableRun:
    """A durable run: ``async with cohort.durable.run("nightly", store="runs.db") as run:``.

    Starting a run whose id is recorded resumes it: children and steps that
    finished return their recorded values without running again.

    Args:
        run_id: the run's id in the store.
        store: a :class:`Store`, the path of a SQLite database, or a
            ``postgresql://`` URL (a :class:`PostgresStore`).
        codec: how values are recorded (``PickleCodec()`` by default).
        sync: ``"group"`` commits once per loop iteration; ``"step"`` commits
            (and, with a database path, fsyncs) each step before it is done.
        wait: seconds to wait for another live owner of the run to go.
        steal: take the run over from a live but hung owner (fenced off).
        on_divergence: ``"fail"`` or ``"discard"`` recorded steps that the
            resumed code no longer has.
        on_ambiguous: an effect step that started before a crash without a
            recorded result: ``"fail"``, ``"rerun"`` it, or ``"skip"`` it (None).
    """
    return DurableRun(
        run_id,
        store,
        codec=codec,
        sync=sync,
        wait=wait,
        steal=steal,
        on_divergence=on_divergence,
        on_ambiguous=on_ambiguous,
    )


def current_run() -> DurableRun:
    """The durable run the calling code runs in; ``LookupError`` outside one."""
    active = _run_var.get()
    if active is None:
        raise LookupError("no durable run is active here: use `async with cohort.durable.run(...)`")
    return active


@overload
async def step(
    fn: Callable[..., Awaitable[T]], *args: Any, name: str | None = None, effect: bool = False
) -> T: ...


@overload
async def step(
    fn: Callable[..., T], *args: Any, name: str | None = None, effect: bool = False
) -> T: ...


async def step(
    fn: Callable[..., Any], *args: Any, name: str | None = None, effect: bool = False
) -> Any:
    """``current_run().step(fn, *args, name=name, effect=effect)``."""
    return await current_run().step(fn, *args, name=name, effect=effect)


async def write_rows(sql: str, rows: Iterable[Sequence[Any]], *, name: str) -> int:
    """``current_run().write_rows(sql, rows, name=name)``: rows committed exactly once,
    in the ledger's transaction."""
    return await current_run().write_rows(sql, rows, name=name)


def idempotency_key() -> str:
    """A key for the step running now, the same on every attempt and resume: pass it
    to an external service to make its effect happen once (hash of run id and path)."""
    active = current_run()
    path = "/".join(_path_var.get())
    return hashlib.sha256(f"{active.run_id}\0{path}".encode()).hexdigest()


def epoch() -> int:
    """The current owner's epoch of the run: a fencing token for other stores (a
    write carrying an older epoch than one already seen must be refused)."""
    return current_run().epoch
