"""The exceptions cohort raises.

Hierarchy:

```text
Exception
└── CohortError                      every error cohort itself raises
    ├── ClosedError (RuntimeError)   a group, pool or primitive used after it closed
    ├── BrokenBarrierError (asyncio.BrokenBarrierError)
    │                                a barrier broken by abort(), reset(), a cancelled
    │                                waiter or a failing action
    ├── WorkerCrashedError           a worker process died while running a call
    ├── PoolBrokenError (RuntimeError)
    │                                workers keep crashing; the pool gave up
    ├── RemoteError                  a worker's exception that cannot be rebuilt here
    ├── SerializationError (TypeError)
    │                                a function, argument or result that cannot be pickled
    ├── PipelineError                a pipeline stage failed under on_error="raise"
    ├── CircuitOpenError             a circuit breaker is open: the call was not made
    ├── BulkheadFullError            a bulkhead had no place (queue full, or no time)
    ├── LeaseLost                    a cohort.redis lease lapsed while its holder held it
    └── CoordinatorLost (ConnectionError)
                                     the Redis server of a cohort.redis coordinator is
                                     unreachable, or restarted and lost its state

ExceptionGroup
└── QuorumError (also CohortError)   a quorum that can no longer be reached
```

Timeouts raise the built-in ``TimeoutError``; cancellation is
``asyncio.CancelledError``; task groups raise ``ExceptionGroup`` (never a
collapsed single error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Self


class CohortError(Exception):
    """Base class of the errors cohort raises."""


class ClosedError(CohortError, RuntimeError):
    """An object was used after it was closed or had finished."""


class BrokenBarrierError(CohortError, asyncio.BrokenBarrierError):
    """A barrier was broken while (or before) the caller waited on it."""


class LeaseLost(CohortError):
    """A ``cohort.redis`` lease lapsed (or was taken over) while its holder still held it.

    Raised out of the ``async with`` block whose lease was lost, after the
    block was cancelled. ``name`` is the primitive, ``token`` the fencing token
    of the lost grant, ``reason`` why it was lost.
    """

    def __init__(self, message: str, *, name: str = "", token: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.token = token
        self.reason = reason


class CoordinatorLost(CohortError, ConnectionError):
    """The Redis server behind a ``cohort.redis`` coordinator cannot be relied on.

    It did not answer within the coordinator's ``unreachable`` bound, or it
    answered without the state it had (a restart or failover lost it).
    """


class WorkerCrashedError(CohortError):
    """A worker process died while it ran a call.

    ``exitcode`` is the process exit code, negative for a signal (as in
    ``multiprocessing``); ``signal`` names the signal when there was one.
    """

    def __init__(self, message: str, *, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode

    @property
    def signal(self) -> int | None:
        """The signal number that killed the worker, if any."""
        if self.exitcode is not None and self.exitcode < 0:
            return -self.exitcode
        return None


class PoolBrokenError(CohortError, RuntimeError):
    """Workers crashed too often in a short window; the pool stopped restarting them."""


class RemoteError(CohortError):
    """An exception from a worker that could not be rebuilt in this process.

    Carries the remote type name, message and formatted traceback so that
    nothing the worker said is lost.
    """

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        super().__init__(f"{type_name}: {message}\n\nRemote traceback:\n{traceback}")
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback


class SerializationError(CohortError, TypeError):
    """A function, argument, result or exception could not be pickled or unpickled."""


class PipelineError(CohortError):
    """A pipeline stage failed under ``on_error="raise"``.

    The original exception is the ``__cause__``.
    """

    def __init__(self, message: str, *, stage: str, item: Any, index: int | None) -> None:
        super().__init__(message)
        self.stage = stage
        self.item = item
        self.index = index


class QuorumError(ExceptionGroup[Exception], CohortError):
    """A quorum can no longer be reached.

    An ``ExceptionGroup`` of the children's failures; ``needed`` is the
    quorum size and ``successes`` the values obtained before giving up.
    ``failed`` counts the critical children that raised (their errors are the
    group's exceptions), ``cancelled`` those cancelled instead (by hand, or by
    the group once the quorum was out of reach).
    """

    needed: int
    successes: list[Any]
    failed: int
    cancelled: int

    def __new__(
        cls,
        message: str,
        exceptions: Sequence[Exception],
        *,
        needed: int = 0,
        successes: Sequence[Any] = (),
        failed: int = 0,
        cancelled: int = 0,
    ) -> Self:
        self = super().__new__(cls, message, exceptions)
        self.needed = needed
        self.successes = list(successes)
        self.failed = failed
        self.cancelled = cancelled
        return self

    def __init__(
        self,
        message: str,
        exceptions: Sequence[Exception],
        *,
        needed: int = 0,
        successes: Sequence[Any] = (),
        failed: int = 0,
        cancelled: int = 0,
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> QuorumError:  # type: ignore[override]
        """The same error over other exceptions (used by ``ExceptionGroup.split``)."""
        return QuorumError(
            self.message,
            excs,
            needed=self.needed,
            successes=self.successes,
            failed=self.failed,
            cancelled=self.cancelled,
        )


class CircuitOpenError(CohortError):
    """A :class:`cohort.CircuitBreaker` refused the call: the backend is failing.

    ``breaker`` names the breaker; ``retry_after`` is how many seconds until it
    lets a probe through (0 when it is half-open with its probes in flight).
    """

    def __init__(self, message: str, *, breaker: str, retry_after: float) -> None:
        super().__init__(message)
        self.breaker = breaker
        self.retry_after = retry_after


class BulkheadFullError(CohortError):
    """A :class:`cohort.Bulkhead` refused the call: its queue was full, or the
    expected wait would have passed the deadline."""
