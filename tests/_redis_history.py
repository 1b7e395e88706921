"""The history checker of the cohort.redis fault trials.

A history is a list of records, one per operation of one party: ``party``,
``op``, ``gen`` (barrier generation) or ``token``, ``start``/``end``
(``time.monotonic()``, one clock for every process of the machine) and
``result``. ``check_*`` return the violations found, as sentences (empty:
the history is safe).

A restart of the server (killed, then started empty on the same port) is
described by a :class:`Restart`: the party that completed a call on the
primitive before the kill saw its epoch, and must never again succeed from the
fresh state the restarted server would give it (docs/semantics.md, "A server
that lost its state").
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]


def check_barrier(history: list[Record], parties: int) -> list[str]:
    """No party passes generation g unless all ``parties`` arrived at g, and a generation
    that broke was passed by nobody."""
    arrived: dict[int, set[str]] = defaultdict(set)
    passed: dict[int, set[str]] = defaultdict(set)
    broke: dict[int, set[str]] = defaultdict(set)
    for r in history:
        if r["op"] != "wait":
            continue
        arrived[r["gen"]].add(r["party"])
        if r["result"] == "passed":
            passed[r["gen"]].add(r["party"])
        elif r["result"] == "broken":
            broke[r["gen"]].add(r["party"])
    bad = []
    for gen, who in passed.items():
        if len(arrived[gen]) < parties:
            bad.append(f"generation {gen} passed by {sorted(who)} with only "
                       f"{sorted(arrived[gen])} arrived")  # fmt: skip
        if broke[gen]:
            bad.append(f"generation {gen} both passed ({sorted(who)}) and broke "
                       f"({sorted(broke[gen])})")  # fmt: skip
    return bad


def check_latch(history: list[Record], count: int) -> list[str]:
    """No waiter saw the latch open before ``count`` distinct tokens had started counting."""
    bad = []
    for r in history:
        if r["op"] == "wait" and r["result"] == "open":
            started = {d["token"] for d in history
                       if d["op"] == "count_down" and d["start"] <= r["end"]}  # fmt: skip
            if len(started) < count:
                bad.append(f"{r['party']} saw the latch open after only {len(started)} "
                           f"count-downs of {count}")  # fmt: skip
    return bad


def check_semaphore(history: list[Record], permits: int) -> list[str]:
    """Never more than ``permits`` grants inside at once (among grants whose lease held)."""
    events = []
    for r in history:
        if r["op"] == "hold" and r["result"] == "held":
            events += [(r["start"], 1, r["party"]), (r["end"], -1, r["party"])]
    inside, bad = 0, []
    for t, step, party in sorted(events, key=lambda e: (e[0], e[1])):
        inside += step
        if inside > permits:
            bad.append(f"{inside} holders inside at once (permits {permits}), {party} at {t}")
    return bad


def check_fencing(accepted: list[int]) -> list[str]:
    """The resource accepted tokens in increasing order only."""
    return [f"stale token {b} accepted after {a}"
            for a, b in itertools.pairwise(accepted) if b < a]  # fmt: skip


def check_bounds(history: list[Record], bound: float) -> list[str]:
    """Every operation ended, within ``bound`` seconds."""
    return [f"{r['party']} {r['op']} took {r['end'] - r['start']:.2f} s > {bound} s"
            for r in history if r["end"] - r["start"] > bound]  # fmt: skip


def check_no_errors(history: list[Record]) -> list[str]:
    """No operation ended with an exception the primitive does not document."""
    return [f"{r['party']} {r['op']} ended with {r['result']}"
            for r in history if str(r["result"]).startswith("error")]  # fmt: skip


@dataclass
class Restart:
    """One restart of the server during a trial."""

    kill_at: float = 0.0  # time.monotonic() just before the server was killed
    # time.monotonic() once it was reaped: until then it may still answer (a SIGKILL is
    # not instant), so only a call begun after this cannot have reached the old state
    dead_at: float = 0.0
    up_at: float = 0.0  # time.monotonic() once the empty server answered
    # time.time() in microseconds between the two: every fencing token the killed server
    # granted is below it, every token of the new one above (tokens come from the server's
    # clock, the machine's clock here)
    fresh_from: int = 0

    def kill(self) -> None:
        self.kill_at = time.monotonic()

    def dead(self) -> None:
        self.dead_at = time.monotonic()

    def starting(self) -> None:
        self.fresh_from = int(time.time() * 1_000_000)

    def up(self) -> None:
        self.up_at = time.monotonic()

    @property
    def took(self) -> float:
        return self.up_at - self.kill_at


def saw_the_old_state(history: list[Record], restart: Restart, after: Iterable[str]) -> set[str]:
    """The parties that completed a call on the primitive before the kill: a record that
    ended before it with an outcome (not ``sent``), or one of the ops in ``after`` (made
    only after a completed call: a barrier's first ``wait`` comes after its join, a
    ``write`` after its grant)."""
    after = set(after)
    return {r["party"] for r in history if 0 < r["end"] < restart.kill_at
            and (r["result"] != "sent" or r["op"] in after)}  # fmt: skip


def check_restart(history: list[Record], restart: Restart, after: Iterable[str]) -> list[str]:
    """After the restart, no party that saw the old state (``saw_the_old_state``) succeeds
    from the new one: no grant with a token of the new server (``hold`` held or ``write``),
    no barrier generation passed and no latch opened by a wait that started once the
    killed server was gone (``dead_at``). Its calls raise ``CoordinatorLost`` instead (a
    holder: ``LeaseLost``)."""
    seen = saw_the_old_state(history, restart, after)
    bad = []
    for r in history:
        if r["party"] not in seen:
            continue
        if r["op"] in ("hold", "write") and r.get("token", 0) >= restart.fresh_from > 0:
            bad.append(f"{r['party']} (it saw the state before the restart) {r['op']} "
                       f"{r['result']}, token {r['token']} of the restarted server")  # fmt: skip
        if (r["op"] == "wait" and r["result"] in ("passed", "open")
                and r["start"] > (restart.dead_at or restart.kill_at)):  # fmt: skip
            what = f"generation {r['gen']} passed" if "gen" in r else "the latch open"
            bad.append(f"{r['party']} (it saw the state before the restart) saw {what} "
                       f"by a wait that started {r['start'] - restart.kill_at:.3f} s after "
                       "the server was killed")  # fmt: skip
    return bad


def restart_detection(history: list[Record], restart: Restart) -> float | None:
    """How long after the kill the last party learned of the lost state (its ``lost``)."""
    ends = [r["end"] for r in history if r["result"] == "lost" and r["end"] > restart.kill_at]
    return max(ends) - restart.kill_at if ends else None
