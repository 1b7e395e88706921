"""``Group`` and ``Member``: a task group whose children are processes that join it.

The coordinating process opens the group (``coord.group(name, parties=N,
join=policy)``); N members, anywhere, join it (``coord.member(name,
name=...)``) under a lease and report ``done(value)`` or ``failed(error)``.
The coordinator reads the reports in the order the server took them and asks
its join policy through the core's policy questions, as a task group asks
about its children; a member whose lease lapses is reported failed by the
server. Once the policy decides, the decision is written to the server and
published: every member still in its block has it cancelled and raises
:class:`GroupDecided`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import traceback
import uuid
from types import TracebackType
from typing import Any, Final, Self

from cohort._core._child import ChildStatus
from cohort._core._policies import (
    Decision,
    JoinPolicy,
    Traits,
    ask_all_done,
    ask_body_done,
    ask_child_done,
    ask_timeout,
    traits_of,
)
from cohort._core._scopes import CancelScope
from cohort._exceptions import CohortError, CoordinatorLost, LeaseLost, RemoteError
from cohort.redis._client import Connection, Primitive
from cohort.redis._lease import Lease, Renewer
from cohort.redis._scripts import (
    GROUP_DECIDE,
    GROUP_OPEN,
    GROUP_POLL,
    GROUP_STATUS,
    MEMBER_JOIN,
    MEMBER_RENEW,
    MEMBER_REPORT,
)

__all__ = ["Group", "GroupDecided", "Member", "group_refusal"]

_CONTINUE, _DONE, _FAIL = Decision.CONTINUE, Decision.DONE, Decision.FAIL
_SUCCEEDED, _FAILED = ChildStatus.SUCCEEDED, ChildStatus.FAILED
_TIMEOUT_MODES: Final = ("raise", "partial")


class GroupDecided(CohortError):
    """A ``cohort.redis`` group decided while (or before) this member worked for it.

    Raised out of ``async with coord.member(...)`` after its block was
    cancelled: the group's policy needed no more reports (``outcome``
    ``"done"``), or it failed (``"fail"``: the policy failed, the deadline
    passed, the coordinator left or its lease lapsed). ``group`` is the
    group's name, ``reason`` what decided it.
    """

    def __init__(
        self, message: str, *, group: str = "", outcome: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.group = group
        self.outcome = outcome
        self.reason = reason


def group_refusal(policy: object) -> str | None:
    """Why ``policy`` cannot join a distributed group; ``None`` if it can.

    Members are not spawned by the group (they join it), so a policy that
    overrides ``on_spawn`` is refused; every other hook is asked.
    """
    if not isinstance(policy, JoinPolicy):
        return (
            "join= takes a cohort.JoinPolicy: Gather(), Quorum(k), FirstWins(), Settle() "
            f"or a subclass, got {policy!r}"
        )
    if traits_of(policy).sees_spawns:
        return (
            f"join={policy!r} overrides on_spawn(), which a cohort.redis group never calls "
            "(its members join it, they are not spawned by it); decide in "
            "on_child_done()/on_all_done()"
        )
    return None


def _group_keys(tag: str) -> list[str]:
    """The keys of a group's scripts (the coordinator's and every member's): its state,
    members, reports and completion order, in the order the scripts read them."""
    return [f"{tag}:state", f"{tag}:members", f"{tag}:reports", f"{tag}:order"]


class _Report:
    """One member's report, as a policy sees a finished child (``ChildView``)."""

    __slots__ = ("error", "name", "value")

    critical = True

    def __init__(self, name: str, value: Any, error: Exception | None) -> None:
        self.name = name
        self.value = value
        self.error = error

    @property
    def status(self) -> ChildStatus:
        return _FAILED if self.error is not None else _SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.error is not None


def _decode(name: str, raw: str | bytes | None) -> _Report:
    report = json.loads(raw) if raw is not None else {"kind": "lapsed", "message": "no report"}
    kind = report.get("kind")
    if kind == "ok":
        return _Report(name, report.get("value"), None)
    if kind == "lapsed":
        message = str(report.get("message", ""))
        return _Report(name, None, LeaseLost(message, name=name, reason=message))
    return _Report(
        name,
        None,
        RemoteError(
            str(report.get("type", "Exception")),
            f"member {name}: {report.get('message', '')}",
            str(report.get("traceback", "")),
        ),
    )


class Group(Primitive):
    """The coordinating side of a distributed task group (a ``GroupView`` for its policy).

    ``async with coord.group("job-7", parties=4, join=cohort.Quorum(2),
    timeout=30) as g:`` opens the group; its ``parties`` members join from
    any process (:meth:`cohort.redis.Coordinator.member`) and report. The
    block runs (start the workers there, or nothing), then ``async with``
    waits until the policy decides, exactly as a :class:`cohort.TaskGroup`
    whose ``parties`` children were all spawned at entry: DONE exits with
    ``g.results`` (values in report order; at most ``k`` for ``Quorum(k)``),
    FAIL raises the policy's error (an ``ExceptionGroup`` for ``Gather``,
    :class:`cohort.QuorumError` for ``Quorum``). A member's error reaches the
    policy as a :class:`cohort.RemoteError` (type, message, traceback); a
    member whose lease lapsed before it reported fails with
    :class:`cohort.LeaseLost`. Past ``timeout`` seconds from entry the policy
    is asked (``on_timeout``), then ``"raise"`` raises ``TimeoutError`` and
    ``"partial"`` exits with what came. A decision made while the block runs
    cancels it (and ``async with`` swallows that cancellation). Once decided,
    every member still working has its block cancelled (``GroupDecided``).

    A group name is used once per namespace (``ValueError`` when opened
    again). Obtained from :meth:`cohort.redis.Coordinator.group`.
    """

    kind = "group"

    def __init__(
        self,
        connection: Connection,
        name: str,
        parties: int,
        join: JoinPolicy,
        *,
        timeout: float | None,
        on_timeout: str,
        lease: float,
    ) -> None:
        super().__init__(connection, name)
        self.parties = parties
        self.join = join
        self._traits: Traits = traits_of(join)
        self._timeout = timeout
        self._partial = on_timeout == "partial"
        self._lease = lease
        self._keys = _group_keys(self.tag)
        self._reports: list[_Report] = []
        self._succeeded = 0
        self._failed = 0
        self._timed_out = False
        self._decision: Decision | None = None
        self._reason = ""
        self._lost: BaseException | None = None
        self._scope: CancelScope | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._entered = False

    def __repr__(self) -> str:
        return f"<cohort.redis.Group {self.name!r} parties={self.parties} join={self.join!r}>"

    # -- GroupView -----------------------------------------------------------------

    @property
    def spawned(self) -> int:
        return self.parties

    @property
    def succeeded(self) -> int:
        """Members that reported ``done``."""
        return self._succeeded

    @property
    def failed(self) -> int:
        """Members that reported ``failed``, left with an error or whose lease lapsed."""
        return self._failed

    @property
    def pending(self) -> int:
        """Members that did not report yet (joined or not)."""
        return self.parties - self._succeeded - self._failed

    body_done = True  # every party is counted from entry: no more can come

    @property
    def timed_out(self) -> bool:
        return self._timed_out

    @property
    def results(self) -> list[Any]:
        """The values reported with ``done``, in the order the server took them
        (capped at the policy's ``results_limit`` once it decided DONE)."""
        values = [r.value for r in self._reports if r.error is None]
        limit = self.join.results_limit
        if self._decision is _DONE and limit is not None and self._traits.completion_order:
            values = values[:limit]
        return values

    @property
    def errors(self) -> list[Exception]:
        """The members' failures, in report order."""
        return [r.error for r in self._reports if r.error is not None]

    def errors_of_critical(self) -> list[Exception]:
        return self.errors

    @property
    def reason(self) -> str:
        """What decided the group (``''`` before it decided)."""
        return self._reason

    # -- the coordinating process ----------------------------------------------------

    async def _run(self, lua: str, *args: object) -> list[Any]:
        lease_ms = max(1, round(self._lease * 1000))
        try:
            return await self.run(lua, self._keys, [self.channel, lease_ms, *args])
        except CoordinatorLost:
            raise
        except Exception as exc:
            if str(exc).startswith("COHORT_USED"):
                raise ValueError(
                    f"{self!r}: the group name {self.name!r} was used before in namespace "
                    f"{self.connection.namespace!r}; give each run of a group a name of its own"
                ) from None
            raise

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError(f"{self!r} has already been entered; open a new group")
        self._entered = True
        await self._run(GROUP_OPEN, self.parties)
        loop = asyncio.get_running_loop()
        deadline = math.inf if self._timeout is None else loop.time() + self._timeout
        scope = self._scope = CancelScope()
        scope.__enter__()
        self._watcher = loop.create_task(self._watch(deadline), name=f"cohort.redis {self!r}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        scope, watcher = self._scope, self._watcher
        assert scope is not None
        assert watcher is not None
        swallowed = scope.__exit__(exc_type, exc, tb)
        if exc is not None and not swallowed:
            # The block failed or was cancelled from outside: the group fails, members stop.
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self._decision is None:
                self._decision = _FAIL
                self._reason = f"the coordinator's block ended with {exc!r}"
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._tell(self._reason))
            return None
        try:
            await asyncio.shield(watcher)
        except asyncio.CancelledError:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
            if self._decision is None:
                self._decision = _FAIL
                self._reason = "the coordinator was cancelled"
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._tell(self._reason))
            raise
        if self._lost is not None:
            raise self._lost
        if self._decision is _FAIL:
            if self._timed_out:
                raise TimeoutError(
                    f"{self!r}: deadline of {self._timeout:g} s passed with {self._succeeded} "
                    f"succeeded, {self._failed} failed, {self.pending} not reported"
                )
            raise self.join.error(self)
        return bool(swallowed)

    async def _tell(self, reason: str) -> None:
        """Decide FAIL on the server whatever came since (the coordinator gives up)."""
        seen = len(self._reports)
        while True:
            _, was, _, names, _ = await self._run(GROUP_POLL, seen)
            if was:
                return
            seen += len(names)
            _, made = await self._run(GROUP_DECIDE, seen, "fail", reason)
            if made:
                return

    def _count(self, report: _Report) -> Decision:
        self._reports.append(report)
        if report.error is None:
            self._succeeded += 1
        else:
            self._failed += 1
        return ask_child_done(self.join, self._traits, self, report)

    async def _watch(self, deadline: float) -> None:
        """Read reports (woken by each, or every poll), ask the policy, decide."""
        connection = self.connection
        loop = asyncio.get_running_loop()
        event = connection.watch(self.channel)
        decision = ask_body_done(self.join, self._traits, self)
        reason = f"the policy {self.join!r} decided before any report"
        try:
            while True:
                event.clear()
                try:
                    _, decided, why, names, found = await self._run(GROUP_POLL, len(self._reports))
                except CoordinatorLost as exc:
                    self._lost = exc
                    break
                if decided:  # decided by the server: the coordinator's lease lapsed
                    self._decision = _FAIL
                    self._reason = why
                    self._lost = LeaseLost(
                        f"{self!r} was decided without this coordinator: {why}",
                        name=self.name,
                        reason=why,
                    )
                    break
                for name, raw in zip(names, found, strict=True):
                    asked = self._count(_decode(_text(name), raw))
                    if decision is _CONTINUE and asked is not _CONTINUE:
                        decision = asked
                        reason = f"the policy {self.join!r} decided at {_text(name)}'s report"
                if decision is _CONTINUE and self.pending == 0:
                    decision = ask_all_done(self.join, self._traits, self)
                    reason = f"every member of {self.parties} reported"
                if decision is _CONTINUE and loop.time() >= deadline:
                    self._timed_out = True
                    decision = ask_timeout(self.join, self._traits, self, self._partial)
                    reason = f"the deadline of {self._timeout:g} s passed"
                    if decision is _CONTINUE:
                        self._timed_out = False
                        deadline = math.inf
                if decision is not _CONTINUE:
                    outcome = "done" if decision is _DONE else "fail"
                    try:
                        _, made = await self._run(GROUP_DECIDE, len(self._reports), outcome, reason)
                    except CoordinatorLost as exc:
                        self._lost = exc
                        break
                    if made:
                        self._decision = decision
                        self._reason = reason
                        break
                    continue  # reports came meanwhile: count them, then decide again
                await connection.pause(
                    event, min(connection.poll, max(0.0, deadline - loop.time()))
                )
        finally:
            connection.unwatch(self.channel, event)
            scope = self._scope
            if scope is not None:
                scope.cancel()  # the block, if it still runs: the group is decided


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Member(Primitive):
    """One member of a distributed group, in any process: ``async with coord.member("job-7",
    name="worker-3") as m: ...; await m.done(value)``.

    Entering joins the group (its ``parties`` must not all have joined:
    ``ValueError``; nor may another member have this name) under a lease
    renewed in the background. Report once, with :meth:`done` (a JSON value)
    or :meth:`failed` (an exception: its type, message and traceback are
    sent); leaving the block with an exception reports that, leaving it
    without a report reports a failure. When the group decides while the
    block runs (the policy needs no more reports, or failed, or the deadline
    passed), the block is cancelled and ``async with`` raises
    :class:`GroupDecided` with the reason; joining a decided group raises it
    at once. If the lease is lost, the block is cancelled and ``async with``
    raises :class:`cohort.LeaseLost` (the coordinator counts the member
    failed); if the server was lost (it lost its state, or a renewal raised
    :class:`cohort.CoordinatorLost`), it raises that ``CoordinatorLost``.

    Obtained from :meth:`cohort.redis.Coordinator.member`.
    """

    kind = "group"

    def __init__(
        self, connection: Connection, group: str, *, name: str | None, lease: float
    ) -> None:
        super().__init__(connection, group)
        self.member = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = lease
        self._keys = _group_keys(self.tag)
        self._renewer: Renewer | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._scope: CancelScope | None = None
        self._reported = False
        self._decided: tuple[str, str] | None = None
        self._lease_obj = Lease(group, 0)
        self._server_lost: CoordinatorLost | None = None

    def __repr__(self) -> str:
        return f"<cohort.redis.Member {self.member!r} of group {self.name!r}>"

    async def _run(self, lua: str, *args: object) -> list[Any]:
        lease_ms = max(1, round(self._lease * 1000))
        try:
            return await self.run(lua, self._keys, [self.channel, lease_ms, self.member, *args])
        except CoordinatorLost:
            raise
        except Exception as exc:
            text = str(exc)
            if text.startswith(("COHORT_NAME", "COHORT_FULL")):
                raise ValueError(f"{self!r}: {text.split(' ', 1)[1]}") from None
            raise

    def _decided_error(self) -> GroupDecided:
        outcome, reason = self._decided or ("", "")
        return GroupDecided(
            f"the group {self.name!r} decided ({outcome}) without {self.member}'s report: {reason}",
            group=self.name,
            outcome=outcome,
            reason=reason,
        )

    async def __aenter__(self) -> Self:
        if self._scope is not None:
            raise RuntimeError(f"{self!r} has already been entered: one object is one member")
        loop = asyncio.get_running_loop()
        sent = loop.time()
        _, status, reason = await self._run(MEMBER_JOIN)
        if status == "decided":
            _, outcome, reason = await self._run(GROUP_STATUS)
            self._decided = (_text(outcome), _text(reason))
            raise self._decided_error()
        scope = self._scope = CancelScope()

        async def renew() -> bool:
            _, held = await self._run(MEMBER_RENEW)
            return bool(held)

        self._renewer = Renewer(
            self._lease_obj, self._lease, renew, lambda _r: scope.cancel(), sent
        )
        self._watcher = loop.create_task(self._watch(), name=f"cohort.redis {self!r}")
        scope.__enter__()
        return self

    async def _watch(self) -> None:
        connection = self.connection
        event = connection.watch(self.channel)
        try:
            while True:
                event.clear()
                try:
                    _, outcome, reason = await self._run(GROUP_STATUS)
                except CoordinatorLost:
                    return  # the renewal finds it too, and loses the lease
                if outcome:
                    self._decided = (_text(outcome), _text(reason))
                    if self._scope is not None:
                        self._scope.cancel()
                    return
                await connection.pause(event, connection.poll)
        finally:
            connection.unwatch(self.channel, event)

    async def _stop(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            await renewer.stop()
            self._server_lost = renewer.lost_to
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _report(self, report: dict[str, Any]) -> None:
        if self._scope is None:
            raise RuntimeError(f"{self!r}: report inside `async with coord.member(...)`")
        if self._reported:
            raise RuntimeError(f"{self!r} reported already: a member reports once")
        payload = json.dumps(report)
        _, status, reason = await self._run(MEMBER_REPORT, payload)
        self._reported = True
        await self._stop()
        if status == "decided":
            _, outcome, reason = await self._run(GROUP_STATUS)
            self._decided = (_text(outcome), _text(reason))
            raise self._decided_error()
        if status == "lapsed":
            self._lease_obj.mark_lost(_text(reason))
            raise LeaseLost(
                f"{self!r}: the report came too late: {_text(reason)}",
                name=self.name,
                reason=_text(reason),
            )

    async def done(self, value: Any = None) -> None:
        """Report success with ``value`` (anything ``json.dumps`` takes: the coordinator gets
        ``json.loads`` of it).

        Raises:
            TypeError: ``value`` cannot be encoded as JSON (nothing was reported).
            GroupDecided: the group decided before this report (it was not counted).
            LeaseLost: the member's lease lapsed first (the coordinator counted it failed).
            RuntimeError: reported already, or outside the ``async with`` block.
        """
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{self!r}: done() sends its value as JSON, and {value!r} cannot be encoded "
                f"({exc}); send a dict, list, str, number, bool or None"
            ) from None
        await self._report({"kind": "ok", "value": value})

    async def failed(self, error: BaseException) -> None:
        """Report failure with ``error`` (its type name, message and traceback are sent; the
        coordinator's policy sees a :class:`cohort.RemoteError`). Raises as :meth:`done`."""
        if not isinstance(error, BaseException):
            raise TypeError(f"{self!r}: failed() takes an exception, got {error!r}")
        await self._report(_error_report(error))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        scope = self._scope
        assert scope is not None
        swallowed = scope.__exit__(exc_type, exc, tb)
        await self._stop()
        lease = self._lease_obj
        if not self._reported and self._decided is None and not lease.lost:
            error = exc if exc is not None and not swallowed else None
            report = (
                _error_report(error)
                if error is not None
                else {"kind": "error", "type": "CohortError",
                      "message": "left its block without reporting", "traceback": ""}
            )  # fmt: skip
            self._reported = True
            _, status, reason = await asyncio.shield(self._run(MEMBER_REPORT, json.dumps(report)))
            if status == "decided" and error is None:
                _, outcome, reason = await self._run(GROUP_STATUS)
                self._decided = (_text(outcome), _text(reason))
        if swallowed:
            if self._server_lost is not None:
                raise self._server_lost
            if lease.lost:
                raise LeaseLost(
                    f"{self!r} lost its lease: {lease.reason}", name=self.name, reason=lease.reason
                )
            if self._decided is not None:
                raise self._decided_error()
        return None


def _error_report(error: BaseException) -> dict[str, Any]:
    return {
        "kind": "error",
        "type": type(error).__name__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }
