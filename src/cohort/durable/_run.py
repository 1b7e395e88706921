"""Durable runs: children and steps recorded by structural path, replayed on resume.

``run()`` owns a run in a store for the ``async with`` block. While it is
active, ``TaskGroup.spawn`` calls the run's hook (``cohort._core._coros.spawn_hook``,
a context variable): the child is named by its path (run / groups / child
name), never by its start order, and its coroutine is wrapped so that a child
recorded as finished is not run again (its value or error is returned, in the
recorded completion order), and one that finishes is recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Token
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from cohort._core._coros import close_coroutines, spawn_hook
from cohort._core._group import TaskGroup
from cohort._core._journal import active, journal_var
from cohort._core._policies import Decision, Quorum
from cohort.durable._codec import Codec, PickleCodec
from cohort.durable._context import name_of, path_var, run_var
from cohort.durable._crash import Crash
from cohort.durable._ledger import LEDGER_AT, LEDGER_EVERY, ItemLedger
from cohort.durable._postgres import PostgresStore
from cohort.durable._replay import FlowReplay, GroupState, Replay, after_replays, cancel_self
from cohort.durable._sqlite import SQLiteStore
from cohort.durable._steps import DONE, Steps
from cohort.durable._store import (
    BufferedStore,
    DecisionRecord,
    DivergenceError,
    StepRecord,
    StepRow,
    Store,
)

__all__ = ["DurableRun", "open_store", "run"]

_DEFAULT_GROUP_NAME = re.compile(r"TaskGroup-\d+")
_FLUSH_AT = 512  # records pending: commit now rather than at the end of the iteration


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


class DurableRun(Steps):
    """An open durable run (made by :func:`run`); use it with ``async with``."""

    def __init__(
        self,
        run_id: str,
        store: Store | str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        sync: Literal["group", "step"] | None = None,
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
        if sync is None:  # a store opened with sync= keeps it; else group commit
            sync = getattr(store, "sync", "group") if isinstance(store, Store) else "group"
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
        self._groups: weakref.WeakKeyDictionary[TaskGroup, GroupState] = weakref.WeakKeyDictionary()
        self._max_seq: dict[str, int] | None = None  # group path -> its highest recorded seq
        # Groups not yet seen closed, by the path they were opened in.
        self._open: dict[tuple[str, ...], list[GroupState]] = {}
        self._flush_scheduled = False
        self._failure: BaseException | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tokens: tuple[Token[Any], Token[Any], Token[Any], Token[Any]] | None = None
        # Decisions taken so far in this run, by (path, kind): the ordinal of the next.
        self._decided: dict[tuple[tuple[str, ...], str], int] = {}
        self._thread = 0  # the loop's thread
        self._crash = Crash()
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
        self._thread = threading.get_ident()
        if self._crash.point == "in-commit" and isinstance(self.store, BufferedStore):
            self.store.before_commit = lambda: self._crash.at("in-commit")
        self._tokens = (
            run_var.set(self),
            path_var.set(()),
            spawn_hook.set(self._on_spawn),
            journal_var.set(self),
        )
        active[0] += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tokens is not None
        run_token, path_token, hook_token, journal_token = self._tokens
        active[0] -= 1
        journal_var.reset(journal_token)
        spawn_hook.reset(hook_token)
        path_var.reset(path_token)
        run_var.reset(run_token)
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
        committed in groups, every ``LEDGER_EVERY`` seconds or ``LEDGER_AT`` items
        (an item that moves through several stages meanwhile is one row)."""
        if self.sync == "step" or pending >= LEDGER_AT:
            self._flush()
        elif self._ledger_timer is None:
            assert self._loop is not None
            self._ledger_timer = self._loop.call_later(LEDGER_EVERY, self._ledger_due)

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
        name = name_of(None, name, "a durable pipeline")
        parent = path_var.get()
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

    # -- names --------------------------------------------------------------------------

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

    def _group_state(self, group: TaskGroup) -> GroupState:
        state = self._groups.get(group)
        if state is None:
            parent = path_var.get()
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
            state = GroupState(group, path, self._next_seq(key))
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
            name = name_of(fn, name, "spawn")
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
        if record is not None and record[1] in DONE:
            assert self._loop is not None
            loop = self._loop
            done = record

            def replay(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
                coro.close()
                self._replayed.add(path)  # its insides never run again, even if cancelled
                slot = loop.create_future()
                state.slots[done[3]] = slot  # once the child exists: its end sets it
                return Replay(self._replay_child(state, done, slot), slot)

            return name, replay

        def live(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
            return self._live_child(state, path, coro, record)

        return name, live

    # -- flows --------------------------------------------------------------------------

    def flow_replay(self, name: str) -> FlowReplay:
        """Open the flow named ``name`` in the current path: its nodes' records, in
        their recorded completion order (``flow_node`` replays them so)."""
        name = name_of(None, name, "a durable flow")
        parent = path_var.get()
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
        return (path_var.set(replay.path), spawn_hook.set(None))

    def flow_scope_end(self, tokens: tuple[Token[Any], Token[Any]]) -> None:
        path_token, hook_token = tokens
        spawn_hook.reset(hook_token)
        path_var.reset(path_token)

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
                await after_replays(earlier)
                return self._decode(record)
            finally:
                if not slot.done():
                    slot.set_result(None)
        await after_replays(list(replay.slots.values()))
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
        self, state: GroupState, record: StepRow, slot: asyncio.Future[None]
    ) -> Any:
        _, status, _, at, _ = record
        try:
            earlier = [slot for seq, slot in state.slots.items() if seq < at]
            await after_replays(earlier)
            if status == "cancelled":
                if state.timeout_seq is not None and at >= state.timeout_seq:
                    state.group.cancel()  # the recorded timeout fires here
                await cancel_self()
            return self._decode(record)
        finally:
            if not slot.done():
                slot.set_result(None)

    async def _live_child(
        self,
        state: GroupState,
        path: str,
        coro: Coroutine[Any, Any, Any],
        record: StepRow | None,
    ) -> Any:
        group = state.group
        try:
            await after_replays(list(state.slots.values()))
            if state.timeout_seq is not None:
                group.cancel()  # the recorded timeout had fired: only recorded children count
                await cancel_self()
        except asyncio.CancelledError:
            coro.close()
            self._cut.add(path)
            self._note_cancelled(state, path, time.time())
            raise
        return await self._execute(path, coro, record, state)

    def _note_cancelled(self, state: GroupState, path: str, started: float) -> None:
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

    # -- the decision journal (cohort._core._journal.Journal) ----------------------------

    def key(self, kind: str) -> tuple[str, str]:
        """The key of the next decision of ``kind`` at the current path: the n-th one
        made there is ``(path, "<kind>-<n>")``."""
        parent = path_var.get()
        n = self._decided.get((parent, kind), 0) + 1
        self._decided[(parent, kind)] = n
        return "/".join(parent), f"{kind}-{n}"

    def recorded(self, key: tuple[str, str]) -> Any:
        """The value journaled under ``key``, or None."""
        record = self._decisions.get(key)
        return None if record is None else json.loads(record.value)

    def forget_decisions(self, prefixes: tuple[str, ...]) -> None:
        """Take no journaled decision made at these paths (or below them) as recorded:
        the steps there run afresh (``resume_flow``); new ones replace them."""
        below = tuple(p + "/" for p in prefixes)
        for key in [k for k in self._decisions if k[0] in prefixes or k[0].startswith(below)]:
            del self._decisions[key]

    def record(self, key: tuple[str, str], value: Any) -> None:
        """Journal ``value`` under ``key``: it commits with the next commit (before any
        record made after it), at the end of this loop iteration at the latest."""
        if self._tokens is None:
            return  # a task or thread that outlived the run: nothing is recorded any more
        loop = self._loop
        assert loop is not None
        if threading.get_ident() != self._thread:  # in a thread (a plain-def node): on the
            loop.call_soon_threadsafe(self.record, key, value)  # loop, before the node's end
            return
        path, kind = key
        self._journal(path, kind, value, -1)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_soon)

    def _journal(self, path: str, kind: str, value: object, seq: int) -> None:
        record = DecisionRecord(self.run_id, path, kind, json.dumps(value), seq)
        self._decisions[(path, kind)] = record
        self.store.put_decision(record)
        self._crash.at("decision")


def run(
    run_id: str,
    *,
    store: Store | str | os.PathLike[str],
    codec: Codec | None = None,
    sync: Literal["group", "step"] | None = None,
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
            Default: the ``sync`` a store given as a :class:`Store` was opened
            with, else ``"group"``.
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
