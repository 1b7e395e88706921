"""cohort.EventFlags: named flags with AND/OR waits, consumption and rendezvous."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cohort
from _util import until
from cohort.testing import VirtualClockLoop, run, wait_all_tasks_blocked


async def _start(
    flags: cohort.EventFlags, coro: Awaitable[frozenset[str]]
) -> asyncio.Task[frozenset[str]]:
    """Start a wait in a task; return once it blocks (or returned at once)."""

    async def call() -> frozenset[str]:
        return await coro

    before = flags.statistics().n_waiting
    task = asyncio.create_task(call())
    await until(lambda: task.done() or flags.statistics().n_waiting > before)
    return task


# -- construction and state -------------------------------------------------------


def test_names_are_fixed_unique_and_non_empty() -> None:
    with pytest.raises(ValueError, match="at least one flag name"):
        cohort.EventFlags()
    with pytest.raises(ValueError, match=r"more than once: \['a'\]"):
        cohort.EventFlags("a", "b", "a")
    assert cohort.EventFlags("x", "y").names == ("x", "y")


def test_set_clear_is_set_snapshot() -> None:
    flags = cohort.EventFlags("a", "b", "c")
    assert flags.snapshot() == frozenset()
    flags.set("a", "c")
    assert flags.is_set("a")
    assert not flags.is_set("b")
    assert flags.snapshot() == {"a", "c"}
    flags.clear("a", "b")
    assert flags.snapshot() == {"c"}
    flags.clear(*flags.names)
    assert flags.snapshot() == frozenset()


async def test_unknown_names_raise_key_error_listing_known_ones() -> None:
    flags = cohort.EventFlags("ready", "done")
    calls: list[Callable[[], object]] = [
        lambda: flags.set("redy"),
        lambda: flags.clear("redy"),
        lambda: flags.is_set("redy"),
    ]
    for call in calls:
        with pytest.raises(KeyError, match="no flag 'redy'; known flags: ready, done"):
            call()
    for wait in (flags.wait_all, flags.wait_any, flags.wait_clear_all, flags.wait_clear_any):
        with pytest.raises(KeyError, match="known flags: ready, done"):
            await wait("ready", "redy")
    with pytest.raises(KeyError, match="redy"):
        await flags.sync(set="redy", wait_all="ready")


async def test_no_names_raise_value_error() -> None:
    flags = cohort.EventFlags("a")
    for wait in (flags.wait_all, flags.wait_any, flags.wait_clear_all, flags.wait_clear_any):
        with pytest.raises(ValueError, match=r"<cohort.EventFlags .*needs at least one flag name"):
            await wait()
    with pytest.raises(ValueError, match="at least one"):
        flags.set()
    with pytest.raises(ValueError, match=r"clear\(\*flags.names\)|at least one"):
        flags.clear()
    with pytest.raises(ValueError, match="at least one"):
        await flags.sync(set="a", wait_all=())


def test_repr_and_statistics() -> None:
    flags = cohort.EventFlags("a", "b", "c")
    flags.set("b")
    assert repr(flags) == "<cohort.EventFlags set=[b] clear=[a, c] n_waiting=0>"
    assert flags.statistics() == cohort.EventFlagsStatistics(
        names=("a", "b", "c"), set_flags=frozenset({"b"}), n_waiting=0
    )


# -- waits -----------------------------------------------------------------------------


async def test_wait_all_returns_snapshot_when_all_are_set() -> None:
    flags = cohort.EventFlags("a", "b", "c")
    task = await _start(flags, flags.wait_all("a", "b"))
    flags.set("a")
    assert flags.statistics().n_waiting == 1  # not released
    flags.set("b", "c")
    assert await task == {"a", "b", "c"}


async def test_immediate_match_returns_without_blocking() -> None:
    flags = cohort.EventFlags("a", "b")
    flags.set("a")
    assert await flags.wait_all("a") == {"a"}
    assert await flags.wait_any("a", "b") == {"a"}
    assert await flags.wait_clear_all("b") == {"a"}
    assert await flags.wait_clear_any("a", "b") == {"a"}
    assert flags.snapshot() == {"a"}


async def test_wait_any_released_by_any_one_flag() -> None:
    flags = cohort.EventFlags("a", "b", "c")
    task = await _start(flags, flags.wait_any("a", "b"))
    flags.set("c")
    assert flags.statistics().n_waiting == 1  # not released
    flags.set("b")
    assert await task == {"b", "c"}


async def test_and_wait_is_atomic_under_interleaved_set_and_clear() -> None:
    """Names seen set at different moments never satisfy an AND wait."""
    flags = cohort.EventFlags("a", "b", "c")
    task = await _start(flags, flags.wait_all("a", "b", "c"))
    for name in ("a", "b", "c"):
        flags.set(name)
        flags.clear(name)
    flags.set("a", "b")
    flags.clear("a")
    flags.set("c")
    flags.clear("b")
    flags.set("a")
    assert flags.statistics().n_waiting == 1  # not released
    flags.set("b")
    assert await task == {"a", "b", "c"}


async def test_set_only_looks_at_waiters_of_the_flags_it_sets() -> None:
    """The index by flag: set("a") leaves the thousand waiters of "b" untouched."""
    flags = cohort.EventFlags("a", "b", "c")
    b_waiters = [asyncio.create_task(flags.wait_all("b", "c")) for _ in range(1000)]
    a_waiter = asyncio.create_task(flags.wait_all("a"))
    await until(lambda: flags.statistics().n_waiting == 1001)
    on_c = flags._on_set.get(2)  # "b" is bit 2: every ("b", "c") waiter watches it
    assert on_c is not None
    assert len(on_c) == 1000
    flags.set("a")
    flags.set("c")  # not watched by anyone: nothing to evaluate
    assert flags._on_set.get(2) is on_c
    assert await a_waiter == {"a"}
    flags.set("b")
    await asyncio.gather(*b_waiters)


async def test_wait_clear_all_and_any() -> None:
    flags = cohort.EventFlags("a", "b", "c")
    flags.set("a", "b", "c")
    all_clear = await _start(flags, flags.wait_clear_all("a", "b"))
    any_clear = await _start(flags, flags.wait_clear_any("b", "c"))
    flags.clear("a")
    assert flags.statistics().n_waiting == 2  # neither released
    flags.set("a")
    flags.clear("b")
    assert await any_clear == {"a", "c"}
    assert flags.statistics().n_waiting == 1  # "a" was set again meanwhile
    flags.clear("a")
    assert await all_clear == {"c"}


# -- consumption -------------------------------------------------------------------------


async def test_two_consuming_waiters_of_one_flag_are_both_released() -> None:
    """ThreadX: both evaluated against the same snapshot, cleared afterwards."""
    flags = cohort.EventFlags("job", "other")
    flags.set("other")
    first = await _start(flags, flags.wait_all("job", clear=True))
    second = await _start(flags, flags.wait_any("job", clear=True))
    flags.set("job")
    assert flags.snapshot() == {"other"}
    assert await first == {"job", "other"}
    assert await second == {"job", "other"}


async def test_immediate_match_with_clear_consumes() -> None:
    flags = cohort.EventFlags("a", "b")
    flags.set("a", "b")
    assert await flags.wait_all("a", clear=True) == {"a", "b"}
    assert flags.snapshot() == {"b"}
    assert await flags.wait_any("a", "b", clear=True) == {"b"}
    assert flags.snapshot() == frozenset()


async def test_wait_any_clear_consumes_only_requested_flags_that_were_set() -> None:
    flags = cohort.EventFlags("a", "b", "c")
    task = await _start(flags, flags.wait_any("a", "b", clear=True))
    flags.set("a", "c")
    assert await task == {"a", "c"}
    assert flags.snapshot() == {"c"}  # "c" not requested: stays set


async def test_consumption_releases_clear_waiters() -> None:
    flags = cohort.EventFlags("a", "b")
    flags.set("a")
    cleared = await _start(flags, flags.wait_clear_all("a"))
    consumer = await _start(flags, flags.wait_all("a", "b", clear=True))
    flags.set("b")
    assert await consumer == {"a", "b"}
    assert await cleared == frozenset()


async def test_satisfied_but_cancelled_before_resuming_gives_consumption_back() -> None:
    flags = cohort.EventFlags("a", "b")
    task = await _start(flags, flags.wait_all("a", "b", clear=True))
    flags.set("a", "b")
    assert flags.snapshot() == frozenset()
    task.cancel()  # released, but it has not resumed yet
    with pytest.raises(asyncio.CancelledError):
        await task
    assert flags.snapshot() == {"a", "b"}


async def test_give_back_keeps_what_another_consumer_of_the_same_set_took() -> None:
    flags = cohort.EventFlags("a", "b")
    both = await _start(flags, flags.wait_all("a", "b", clear=True))
    only_a = await _start(flags, flags.wait_any("a", clear=True))
    flags.set("a", "b")
    both.cancel()
    with pytest.raises(asyncio.CancelledError):
        await both
    assert await only_a == {"a", "b"}
    assert flags.snapshot() == {"b"}  # "a" was consumed by only_a; "b" comes back


async def test_give_back_restores_when_every_consumer_gave_up() -> None:
    flags = cohort.EventFlags("a")
    tasks = [await _start(flags, flags.wait_all("a", clear=True)) for _ in range(2)]
    flags.set("a")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert flags.snapshot() == {"a"}


async def test_give_back_can_release_another_waiter() -> None:
    flags = cohort.EventFlags("a")
    first = await _start(flags, flags.wait_all("a", clear=True))
    # Runs before first resumes, so it finds the flag already consumed.
    second = asyncio.create_task(flags.wait_all("a", clear=True))
    flags.set("a")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == {"a"}
    assert flags.snapshot() == frozenset()


# -- cancellation and timeouts ------------------------------------------------------


async def test_cancelled_waiters_consume_nothing_and_leave_nothing_behind() -> None:
    flags = cohort.EventFlags("a", "b", "c")
    flags.set("a")
    tasks = [
        await _start(flags, flags.wait_all("a", "b", clear=True)),
        await _start(flags, flags.wait_any("b", "c", clear=True)),
        await _start(flags, flags.wait_all("b")),
        await _start(flags, flags.wait_clear_all("a")),
        await _start(flags, flags.wait_clear_any("a")),
        await _start(flags, flags.sync(set="a", wait_all=("a", "b"))),
    ]
    assert flags.statistics().n_waiting == 6
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(task.cancelled() for task in tasks)
    assert flags.statistics().n_waiting == 0
    assert not any(flags._on_set.values())
    assert not any(flags._on_clear.values())
    assert not any(flag.waiters for flag in flags._flags)
    assert flags.snapshot() == {"a"}
    flags.set("b", "c")
    assert flags.snapshot() == {"a", "b", "c"}


async def test_waiter_cancelled_before_set_runs_its_handler_is_skipped() -> None:
    flags = cohort.EventFlags("a", "b")
    cancelled = await _start(flags, flags.wait_all("a", clear=True))
    one = await _start(flags, flags.wait_any("a"))
    survivor = await _start(flags, flags.wait_any("a", "b", clear=True))
    cancelled.cancel()
    one.cancel()
    flags.set("a")  # before the cancelled tasks ran their handlers
    assert await survivor == {"a"}
    assert flags.snapshot() == frozenset()
    await asyncio.gather(cancelled, one, return_exceptions=True)
    assert cancelled.cancelled()
    assert one.cancelled()
    assert flags.statistics().n_waiting == 0


async def test_clear_waiter_cancelled_before_clear_runs_its_handler_is_skipped() -> None:
    flags = cohort.EventFlags("a", "b")
    flags.set("a", "b")
    cancelled = await _start(flags, flags.wait_clear_any("a", "b"))
    survivor = await _start(flags, flags.wait_clear_all("a"))
    cancelled.cancel()
    flags.clear("a")
    assert await survivor == {"b"}
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert _listed(flags) == 0


@pytest.mark.virtual_clock
async def test_timeouts_from_asyncio_and_cohort_scopes() -> None:
    loop = asyncio.get_running_loop()
    flags = cohort.EventFlags("a", "b")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await flags.wait_all("a", "b", clear=True)
    assert loop.time() == 1.5
    with pytest.raises(TimeoutError), cohort.fail_after(2):
        await flags.wait_any("a")
    assert loop.time() == 3.5
    with cohort.move_on_after(1) as scope:
        await flags.sync(set="a", wait_all=("a", "b"))
    assert scope.cancelled_caught
    assert loop.time() == 4.5
    assert flags.statistics().n_waiting == 0
    assert flags.snapshot() == {"a"}  # sync's own set is not undone


# -- sync --------------------------------------------------------------------------------


async def test_sync_is_a_reusable_rendezvous() -> None:
    flags = cohort.EventFlags("a", "b", "c")
    everyone = ("a", "b", "c")
    for _ in range(2):
        first = await _start(flags, flags.sync(set="a", wait_all=everyone))
        second = await _start(flags, flags.sync(set="b", wait_all=everyone))
        assert not first.done()
        assert flags.snapshot() == {"a", "b"}
        assert await flags.sync(set="c", wait_all=everyone) == {"a", "b", "c"}
        assert await first == {"a", "b", "c"}
        assert await second == {"a", "b", "c"}
        assert flags.snapshot() == frozenset()


async def test_sync_without_clear_leaves_flags_set() -> None:
    flags = cohort.EventFlags("a", "b")
    flags.set("b")
    assert await flags.sync(set=["a"], wait_all="b", clear=False) == {"a", "b"}
    assert flags.snapshot() == {"a", "b"}


# -- logging, anyio ------------------------------------------------------------------------


async def test_debug_events_for_set_and_clear(events: list[MutableMapping[str, Any]]) -> None:
    flags = cohort.EventFlags("a", "b")
    waiter = await _start(flags, flags.wait_all("a"))
    flags.set("a", "b")
    flags.clear("b")
    await waiter
    assert [(e["event"], e["names"], e["woken"]) for e in events] == [
        ("event flags set", ["a", "b"], 1),
        ("event flags cleared", ["b"], 0),
    ]


# anyio's asyncio backend on the virtual clock: its timeouts take no real time.
_VIRTUAL = {"loop_factory": VirtualClockLoop}


def test_works_inside_anyio_on_asyncio_backend() -> None:
    async def main() -> frozenset[str]:
        flags = cohort.EventFlags("a", "b")
        results: list[frozenset[str]] = []

        async def waiter() -> None:
            results.append(await flags.wait_all("a", "b"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0)
            flags.set("a")
            flags.set("b")
        with anyio.move_on_after(0.01):
            await flags.wait_clear_all("a")
        assert flags.statistics().n_waiting == 0
        return results[0]

    assert anyio.run(main, backend="asyncio", backend_options=_VIRTUAL) == {"a", "b"}


# -- property test against a reference model -------------------------------------------

NAMES = ("a", "b", "c", "d")
MODES = ("all", "any", "clear_all", "clear_any", "sync")


@dataclass
class _ModelWaiter:
    mode: str
    names: frozenset[str]
    consume: bool
    result: frozenset[str] | None = None


@dataclass
class _Model:
    """The rules written as plainly as possible: evaluate every waiter on every change."""

    state: frozenset[str] = frozenset()
    pending: dict[int, _ModelWaiter] = field(default_factory=dict)
    results: dict[int, frozenset[str]] = field(default_factory=dict)

    def _satisfied(self, w: _ModelWaiter, snap: frozenset[str]) -> bool:
        if w.mode in ("all", "sync"):
            return w.names <= snap
        if w.mode == "any":
            return bool(w.names & snap)
        if w.mode == "clear_all":
            return not w.names & snap
        return not w.names <= snap

    def _release(self, kinds: tuple[str, ...], snap: frozenset[str]) -> frozenset[str]:
        consumed: frozenset[str] = frozenset()
        for key, w in list(self.pending.items()):
            if w.mode in kinds and self._satisfied(w, snap):
                del self.pending[key]
                self.results[key] = snap
                if w.consume:
                    consumed |= w.names & snap
        return consumed

    def set(self, names: frozenset[str], consume: frozenset[str] = frozenset()) -> None:
        snap = self.state | names
        consume |= self._release(("all", "any", "sync"), snap)
        self.state = snap - consume
        self._release(("clear_all", "clear_any"), self.state)

    def clear(self, names: frozenset[str]) -> None:
        self.state -= names
        self._release(("clear_all", "clear_any"), self.state)

    def wait(self, key: int, w: _ModelWaiter, set_name: str | None) -> None:
        if set_name is not None:  # sync
            if w.names <= self.state | {set_name}:
                self.results[key] = self.state | {set_name}
                self.set(frozenset({set_name}), w.names if w.consume else frozenset())
                return
            self.set(frozenset({set_name}))
        if self._satisfied(w, self.state):
            self.results[key] = self.state
            if w.consume:
                self.clear(w.names & self.state)
            return
        self.pending[key] = w


_subset = st.frozensets(st.sampled_from(NAMES), min_size=1, max_size=3)
_op = st.one_of(
    st.tuples(st.just("set"), _subset),
    st.tuples(st.just("clear"), _subset),
    st.tuples(
        st.just("wait"), st.sampled_from(MODES), _subset, st.booleans(), st.sampled_from(NAMES)
    ),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=20)),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=30))
def test_random_set_clear_wait_cancel_matches_reference_model(
    ops: list[tuple[object, ...]],
) -> None:
    async def main() -> None:
        flags = cohort.EventFlags(*NAMES)
        model = _Model()
        tasks: dict[int, asyncio.Task[frozenset[str]]] = {}
        for op in ops:
            if op[0] == "set":
                names = op[1]
                assert isinstance(names, frozenset)
                flags.set(*sorted(names))
                model.set(names)
            elif op[0] == "clear":
                names = op[1]
                assert isinstance(names, frozenset)
                flags.clear(*sorted(names))
                model.clear(names)
            elif op[0] == "wait":
                _, mode, names, consume, set_name = op
                assert isinstance(mode, str)
                assert isinstance(names, frozenset)
                assert isinstance(consume, bool)
                assert isinstance(set_name, str)
                key = len(tasks)
                tasks[key] = asyncio.create_task(_call(flags, mode, names, consume, set_name))
                w = _ModelWaiter(mode, names, consume and mode not in ("clear_all", "clear_any"))
                model.wait(key, w, set_name if mode == "sync" else None)
            else:
                pending = sorted(model.pending)
                if pending:
                    assert isinstance(op[1], int)
                    key = pending[op[1] % len(pending)]
                    tasks[key].cancel()
                    del model.pending[key]
            await wait_all_tasks_blocked()
            assert flags.snapshot() == model.state
            assert flags.statistics().n_waiting == len(model.pending)
            assert _listed(flags) == len(model.pending)  # nothing left behind
            for key, task in tasks.items():
                if key in model.results:
                    assert task.done(), key
                    assert task.result() == model.results[key], key
                elif key in model.pending:
                    assert not task.done()
                else:
                    assert task.cancelled()
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)

    run(main)


def _listed(flags: cohort.EventFlags) -> int:
    futs = {f for flag in flags._flags for f in flag.waiters}
    for index in (flags._on_set, flags._on_clear):
        futs.update(w.fut for bucket in index.values() for w in bucket)
    return len(futs)


def _call(
    flags: cohort.EventFlags, mode: str, names: frozenset[str], consume: bool, set_name: str
) -> Coroutine[object, object, frozenset[str]]:
    args = sorted(names)
    if mode == "all":
        return flags.wait_all(*args, clear=consume)
    if mode == "any":
        return flags.wait_any(*args, clear=consume)
    if mode == "clear_all":
        return flags.wait_clear_all(*args)
    if mode == "clear_any":
        return flags.wait_clear_any(*args)
    return flags.sync(set=set_name, wait_all=args, clear=consume)
