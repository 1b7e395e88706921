"""A group's reason is made when read (cohort._observe._reasons.lazy_reason)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import pickle

import pytest

import cohort
from cohort import CancelReason

pytestmark = pytest.mark.virtual_clock


class _CountingFirstWins(cohort.FirstWins):
    """FirstWins that counts how often its repr (part of a winner's reason) is made."""

    reprs = 0

    def __repr__(self) -> str:
        type(self).reprs += 1
        return "FirstWins()"


async def _win() -> int:
    await asyncio.sleep(0)
    return 1


async def _lose() -> int:
    await asyncio.sleep(3600)
    return 0


async def test_a_race_makes_its_reason_only_when_it_is_read() -> None:
    _CountingFirstWins.reprs = 0
    async with cohort.TaskGroup(join=_CountingFirstWins()) as g:
        g.spawn(_lose, name="slow")
        g.spawn(_win, name="fast")
    assert _CountingFirstWins.reprs == 0  # the loser was cancelled, nobody asked why
    reason = g.outcomes[0].cancel_reason
    assert reason is not None
    assert _CountingFirstWins.reprs == 0  # the record itself is not read yet
    assert str(reason) == "'fast' won (FirstWins())"
    assert _CountingFirstWins.reprs == 1
    assert (reason.kind, reason.child, reason.source) == ("winner", "fast", g.name)
    assert _CountingFirstWins.reprs == 1  # made once


async def test_a_reason_made_when_read_is_the_reason_it_stands_for() -> None:
    async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
        g.spawn(_lose, name="slow")
        g.spawn(_win, name="fast")
    reason = g.outcomes[0].cancel_reason
    assert isinstance(reason, CancelReason)
    plain = CancelReason("winner", "'fast' won (FirstWins())", source=g.name, child="fast")
    assert reason == plain
    assert plain == reason
    assert hash(reason) == hash(plain)
    assert repr(reason) == repr(plain)
    for other in (pickle.loads(pickle.dumps(reason)), copy.copy(reason)):
        assert type(other) is CancelReason
        assert other == plain
    assert dataclasses.asdict(reason) == dataclasses.asdict(plain)
    assert dataclasses.replace(reason, message="m") == dataclasses.replace(plain, message="m")
