"""The history checker of the cohort.redis fault trials.

A history is a list of records, one per operation of one party: ``party``,
``op``, ``gen`` (barrier generation) or ``token``, ``start``/``end``
(``time.monotonic()``, one clock for every process of the machine) and
``result``. ``check_*`` return the violations found, as sentences (empty:
the history is safe).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
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
