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
from typing import TYPE_CHECKING, Any, Protocol

from cohort._exceptions import CohortError, QuorumError
from cohort._validate import check_count

if TYPE_CHECKING:
    from cohort._core._handle import ChildStatus

__all__ = [
    "ChildView",
    "Decision",
    "FirstWins",
    "Gather",
    "GroupView",
    "JoinPolicy",
    "Quorum",
    "Settle",
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
