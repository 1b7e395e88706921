"""Join policies: objects that decide when a task group is done.

A policy is consulted when a critical child finishes, when the body of the
``async with`` block finishes, when every critical child has finished, and
when the group's timeout fires. It answers with a :class:`Decision`. Policies
keep no state of their own (the group counts for them), so one policy object
can serve many groups.

Writing one:

```python
class TwoOrThreeStrikes(cohort.JoinPolicy):
    '''Done when 2 children succeed; failed after 3 failures.'''

    def on_child_done(
        self, group: cohort.GroupView, handle: cohort.ChildView
    ) -> cohort.Decision:
        if group.succeeded >= 2:
            return cohort.Decision.DONE
        if group.failed >= 3:
            return cohort.Decision.FAIL
        return cohort.Decision.CONTINUE
```
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cohort._core._child import ChildStatus
from cohort._exceptions import CohortError, QuorumError
from cohort._validate import check_count

__all__ = [
    "ChildView",
    "Decision",
    "FirstWins",
    "Gather",
    "GroupView",
    "JoinPolicy",
    "Quorum",
    "Settle",
    "Traits",
    "ask_all_done",
    "ask_body_done",
    "ask_child_done",
    "ask_spawned",
    "ask_timeout",
    "fan_in_refusal",
    "traits_of",
]


class GroupView(Protocol):
    """What a policy reads of the group it decides for (a ``TaskGroup`` is one).

    Counters are of critical children only; ``pending`` is spawned minus
    finished; ``body_done`` is true once the ``async with`` body has ended.
    """

    @property
    def name(self) -> str:
        """The group's name (shown in errors, logs and ``task_tree()``)."""

    @property
    def spawned(self) -> int:
        """Critical children spawned so far."""

    @property
    def succeeded(self) -> int:
        """Critical children that succeeded."""

    @property
    def failed(self) -> int:
        """Critical children that failed, timed out or were cancelled."""

    @property
    def pending(self) -> int:
        """Critical children not finished yet (queued or running)."""

    @property
    def body_done(self) -> bool:
        """True once the ``async with`` body has finished."""

    @property
    def timed_out(self) -> bool:
        """True if the group's timeout fired."""

    @property
    def results(self) -> list[Any]:
        """Successful values so far (see ``TaskGroup.results``)."""

    def errors_of_critical(self) -> list[Exception]:
        """Errors of critical children that failed or timed out, in spawn order."""


class ChildView(Protocol):
    """What a policy reads of the child that finished (a ``Handle`` is one)."""

    @property
    def name(self) -> str:
        """The child's name."""

    @property
    def critical(self) -> bool:
        """False for an optional child (``critical=False``)."""

    @property
    def status(self) -> ChildStatus:
        """Where the child is: pending, running, succeeded, failed, cancelled, timed out."""

    @property
    def failed(self) -> bool:
        """True if the child raised (a timeout of its own included)."""

    @property
    def error(self) -> BaseException | None:
        """What the child raised, if it failed."""


class Decision(enum.Enum):
    """What a policy says about the group."""

    CONTINUE = "continue"  #: keep going
    DONE = "done"  #: success: cancel what still runs and exit normally
    FAIL = "fail"  #: failure: cancel what still runs and raise ``policy.error(group)``


class JoinPolicy:
    """Base class of join policies; every hook may be overridden.

    Hooks receive the group as a :class:`GroupView` (its counters: ``spawned``,
    ``succeeded``, ``failed``, ``pending``, ``body_done``) and the finished
    child as a :class:`ChildView`, and return a :class:`Decision`. Only
    critical children reach the hooks.
    """

    #: Order of ``group.results``: "spawn" or "completion".
    results_order: str = "spawn"
    #: Whether ``error()`` includes every critical failure (and a failing body
    #: is reported together with them).
    raises_child_errors: bool = False
    #: Whether ``on_child_done`` is called for successful children too (a
    #: policy that only reacts to failures sets False: it saves a call per child).
    consults_on_success: bool = True
    #: For "completion" order: once the policy decided DONE, ``group.results``
    #: holds at most this many values (children that finished in the same
    #: loop iteration are left out); ``None`` for no cap.
    results_limit: int | None = None

    def on_spawn(self, group: GroupView, handle: ChildView) -> Decision:
        """A critical child was spawned."""
        return Decision.CONTINUE

    def on_child_done(self, group: GroupView, handle: ChildView) -> Decision:
        """A critical child finished (succeeded, failed, cancelled or timed out)."""
        return Decision.CONTINUE

    def on_body_done(self, group: GroupView) -> Decision:
        """The ``async with`` body finished: no more children will come from it."""
        return Decision.CONTINUE

    def on_all_done(self, group: GroupView) -> Decision:
        """The body and every critical child finished and nothing decided yet."""
        return Decision.DONE

    def on_timeout(self, group: GroupView) -> Decision | None:
        """The group's timeout fired; ``None`` applies the group's ``on_timeout``."""
        return None

    def error(self, group: GroupView) -> BaseException:
        """The exception raised when the policy decided FAIL."""
        failures = group.errors_of_critical()
        if not failures:
            return CohortError(f"{type(self).__name__} failed {group!r} without a child error")
        return ExceptionGroup(f"{group.name}: {len(failures)} child(ren) failed", failures)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Gather(JoinPolicy):
    """Wait for every child; the first failure cancels the rest (fail fast).

    Exit raises an ``ExceptionGroup`` of every failure, as ``asyncio.TaskGroup``
    does; ``group.results`` holds the values in spawn order.
    """

    raises_child_errors = True
    consults_on_success = False

    def on_child_done(self, group: GroupView, handle: ChildView) -> Decision:
        """A failure fails the group at once; a success changes nothing."""
        if handle.failed:
            return Decision.FAIL
        return Decision.CONTINUE


class Settle(JoinPolicy):
    """Wait for every child and never fail for one; read ``results`` and ``errors``."""


class Quorum(JoinPolicy):
    """Done as soon as ``k`` children succeeded; the rest are cancelled.

    ``group.results`` holds the ``k`` values in completion order. When ``k``
    can no longer be reached, exit raises :class:`cohort.QuorumError`.
    """

    results_order = "completion"

    def __init__(self, k: int) -> None:
        self.k = check_count("Quorum(k)", k)
        self.results_limit = self.k

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.k})"

    def _judge(self, group: GroupView) -> Decision:
        if group.succeeded >= self.k:
            return Decision.DONE
        if group.body_done and group.succeeded + group.pending < self.k:
            return Decision.FAIL
        return Decision.CONTINUE

    def on_child_done(self, group: GroupView, handle: ChildView) -> Decision:
        """Done at the k-th success; failed once k successes are out of reach."""
        return self._judge(group)

    def on_body_done(self, group: GroupView) -> Decision:
        """As ``on_child_done``: no more children can come once the body is done."""
        return self._judge(group)

    def on_all_done(self, group: GroupView) -> Decision:
        """Every child ended: done if k succeeded, else failed."""
        return Decision.DONE if group.succeeded >= self.k else Decision.FAIL

    def error(self, group: GroupView) -> BaseException:
        """A :class:`cohort.QuorumError` of the critical children's failures."""
        failures = group.errors_of_critical()
        # group.failed also counts the critical children that were cancelled
        # (they have no error): reported apart from those that raised.
        failed = len(failures)
        cancelled = group.failed - failed
        message = (
            f"{group.name}: quorum of {self.k} unreachable ({group.succeeded} succeeded, "
            f"{failed} failed, {cancelled} cancelled of {group.spawned})"
        )
        if not failures:
            failures = [CohortError(f"{message}: not enough children, or children cancelled")]
        return QuorumError(
            message,
            failures,
            needed=self.k,
            successes=group.results,
            failed=failed,
            cancelled=cancelled,
        )


class FirstWins(Quorum):
    """The first success wins (``group.result``); the others are cancelled.

    If every child fails, exit raises :class:`cohort.QuorumError`.
    """

    def __init__(self) -> None:
        super().__init__(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# -- the one policy question ---------------------------------------------------------
#
# Whoever joins children under a policy (a TaskGroup, a Flow node's fan-in, a
# pipeline fork through its group) asks it through these functions, with its own
# GroupView and ChildView objects, and gets the same answers: a hook that is
# JoinPolicy's own is not called, its answer is known.


@dataclass(frozen=True, slots=True)
class Traits:
    """What a joiner needs to know of a policy's class, worked out once per class
    (slots: each read on a group's hot path is a plain slot read)."""

    #: ``results`` in completion order (the joiner keeps the finished children in order).
    completion_order: bool
    #: ``on_child_done`` is asked about successes too (else a success only counts).
    sees_successes: bool
    #: ``on_spawn`` is the policy's own (asked for each critical child spawned).
    sees_spawns: bool
    #: ``on_body_done`` is the policy's own.
    sees_body_done: bool
    #: ``on_all_done`` is the policy's own (JoinPolicy's says DONE).
    sees_all_done: bool
    #: ``on_timeout`` is the policy's own (JoinPolicy's defers to the joiner's mode).
    sees_timeout: bool
    #: A critical child's success only counts: nothing to keep, nothing to ask.
    lean: bool
    #: Lean, and a child is not read as it spawns (no ``on_spawn``): a joiner may
    #: keep no record of a child until it ends without succeeding.
    plain: bool


_CONTINUE, _DONE, _FAIL = Decision.CONTINUE, Decision.DONE, Decision.FAIL
_SUCCEEDED: Final = ChildStatus.SUCCEEDED
_by_class: dict[type[JoinPolicy], Traits] = {}
# Class attributes an instance may set for itself (then its traits are its own).
_PER_INSTANCE = ("results_order", "consults_on_success")


def traits_of(policy: JoinPolicy) -> Traits:
    """The traits of ``policy``: cached per class, unless the instance sets the
    class-level switches (``results_order``, ``consults_on_success``) itself."""
    kind = type(policy)
    own = getattr(policy, "__dict__", None)
    if own and not own.keys().isdisjoint(_PER_INSTANCE):
        return _traits(policy, kind)
    traits = _by_class.get(kind)
    if traits is None:
        traits = _by_class[kind] = _traits(policy, kind)
    return traits


def _traits(policy: JoinPolicy, kind: type[JoinPolicy]) -> Traits:
    completion_order = policy.results_order == "completion"
    sees_successes = (
        bool(policy.consults_on_success) and kind.on_child_done is not JoinPolicy.on_child_done
    )
    sees_spawns = kind.on_spawn is not JoinPolicy.on_spawn
    lean = not completion_order and not sees_successes
    return Traits(
        completion_order=completion_order,
        sees_successes=sees_successes,
        sees_spawns=sees_spawns,
        sees_body_done=kind.on_body_done is not JoinPolicy.on_body_done,
        sees_all_done=kind.on_all_done is not JoinPolicy.on_all_done,
        sees_timeout=kind.on_timeout is not JoinPolicy.on_timeout,
        lean=lean,
        plain=lean and not sees_spawns,
    )


def ask_spawned(policy: JoinPolicy, traits: Traits, group: GroupView, child: ChildView) -> Decision:
    """A critical child was spawned."""
    return policy.on_spawn(group, child) if traits.sees_spawns else _CONTINUE


def ask_child_done(
    policy: JoinPolicy, traits: Traits, group: GroupView, child: ChildView
) -> Decision:
    """A critical child ended (the joiner has counted it): a success is shown to the
    policy only if it asks to see successes."""
    if child.status is _SUCCEEDED and not traits.sees_successes:
        return _CONTINUE
    return policy.on_child_done(group, child)


def ask_body_done(policy: JoinPolicy, traits: Traits, group: GroupView) -> Decision:
    """No more children will come (the body ended)."""
    return policy.on_body_done(group) if traits.sees_body_done else _CONTINUE


def ask_all_done(policy: JoinPolicy, traits: Traits, group: GroupView) -> Decision:
    """Every critical child ended and nothing decided yet: DONE or FAIL (a CONTINUE
    here means DONE, there being nothing left to wait for)."""
    if not traits.sees_all_done:
        return _DONE
    return _FAIL if policy.on_all_done(group) is _FAIL else _DONE


def ask_timeout(policy: JoinPolicy, traits: Traits, group: GroupView, partial: bool) -> Decision:
    """The joiner's timeout fired: the policy's answer, or, where it has none, FAIL
    (``on_timeout="raise"``) or DONE (``partial``)."""
    decision = policy.on_timeout(group) if traits.sees_timeout else None
    if decision is None:
        return _DONE if partial else _FAIL
    return decision


def fan_in_refusal(policy: object) -> str | None:
    """Why ``policy`` cannot join a fan-in whose children are not spawned one by one
    and that has no timeout of its own (a Flow node's upstreams); ``None`` if it can."""
    if not isinstance(policy, JoinPolicy):
        return (
            "join= takes a cohort.JoinPolicy: Gather(), Quorum(k), FirstWins(), Settle() "
            f"or a subclass, got {policy!r}"
        )
    traits = traits_of(policy)
    for hook, overridden in (("on_spawn", traits.sees_spawns), ("on_timeout", traits.sees_timeout)):
        if overridden:
            return (
                f"join={policy!r} overrides {hook}(), which a fan-in never calls (its "
                "upstreams are not spawned by it and it has no timeout of its own); "
                "decide in on_child_done()/on_all_done(), or use it in a TaskGroup"
            )
    return None
