"""``cohort.fork``: a stage that runs several branches on each item, joined by a policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from cohort._core._group import TaskGroup
from cohort._core._handle import ChildStatus
from cohort._core._policies import Gather, JoinPolicy
from cohort.pipeline._stage import Stage, stage

__all__ = ["fork"]


def fork(
    *branches: Callable[..., Any],
    join: JoinPolicy | None = None,
    timeout: float | None = None,
    on_timeout: Literal["raise", "partial"] = "raise",
    name: str | None = None,
    **stage_options: Any,
) -> Stage[Any, dict[str, Any]]:
    """A stage that runs every branch concurrently on each item and emits ``{name: value}``.

    Each item gets its own ``cohort.TaskGroup(join=join, timeout=timeout)``
    (``Gather()`` by default) with one child per branch; once the policy
    decides, the branches still running are cancelled and are absent from the
    mapping, as are branches that failed (under a policy that tolerates
    failures). When the group fails (a ``Gather`` branch failed, a quorum
    became unreachable, the timeout fired with ``on_timeout="raise"``), the
    item fails with that error under the fork's ``on_error``.

    Branches are async functions, plain functions or stages (awaiting a stage
    applies its own ``timeout`` and ``retry``); their names are their
    ``__name__`` (rename with ``cohort.stage(name=...)(fn)``). The remaining
    keyword arguments are stage options (``workers``, ``retry``, ``on_error``...).

    Example:
        ```python
        lookup = cohort.fork(primary, replica_a, replica_b, join=cohort.Quorum(2), timeout=0.5)
        report = await (parse | lookup | store).run(keys)
        ```
    """
    if not branches:
        raise ValueError("cohort.fork() needs at least one branch")
    for branch in branches:
        if not callable(branch):
            raise TypeError(f"cohort.fork() takes functions or stages as branches, got {branch!r}")
    if "batch" in stage_options:
        raise TypeError("cohort.fork() takes no batch= option")
    TaskGroup(join=join, timeout=timeout, on_timeout=on_timeout)  # validate at the call site
    named: dict[str, Stage[Any, Any]] = {}
    for branch in branches:
        st = branch if isinstance(branch, Stage) else stage(branch)
        if st.options.batch is not None:
            raise TypeError(f"fork branch {st!r} is a batch stage; branches take single items")
        if st.name in named:
            raise ValueError(
                f"two fork branches are named {st.name!r}; rename one with "
                f"cohort.stage(name=...)({st.name})"
            )
        named[st.name] = st
    policy = join if join is not None else Gather()
    label = name if name is not None else f"fork({', '.join(named)})"

    async def forked(item: Any) -> dict[str, Any]:
        async with TaskGroup(
            join=policy, timeout=timeout, on_timeout=on_timeout, name=label
        ) as group:
            handles = [(n, group.spawn(st, item, name=n)) for n, st in named.items()]
        return {n: h.result() for n, h in handles if h.status is ChildStatus.SUCCEEDED}

    forked.__name__ = forked.__qualname__ = label
    result: Stage[Any, dict[str, Any]] = stage(name=label, **stage_options)(forked)
    return result
