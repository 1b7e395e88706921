"""``HedgeBudget``: caps the extra attempts of ``hedge`` to a fraction of the calls."""

from __future__ import annotations

from cohort._validate import check_count, check_fraction

__all__ = ["HedgeBudget"]


class HedgeBudget:
    """Caps the extra attempts of ``hedge`` to a fraction of the calls.

    Each call deposits ``ratio`` of an attempt; each extra attempt (a hedge
    or a retry after a failure) withdraws one; the balance starts at, and is
    capped by, ``reserve``. Over any stretch, extra attempts are at most
    ``ratio`` x calls + ``reserve``: with ``ratio=0.1``, at most 10 % extra
    load on a backend, so that hedging cannot amplify an overload.
    """

    def __init__(self, ratio: float = 0.1, *, reserve: int = 10) -> None:
        self.ratio = check_fraction("ratio", ratio, zero=True)
        self.reserve = check_count("reserve", reserve, least=0)
        self._balance = float(self.reserve)
        self.calls = self.extra = self.denied = 0

    def __repr__(self) -> str:
        return f"<cohort.HedgeBudget ratio={self.ratio:g} balance={self._balance:.2f}>"

    def deposit(self) -> None:
        """One call: credit ``ratio`` of an extra attempt."""
        self.calls += 1
        self._balance = min(max(float(self.reserve), 1.0), self._balance + self.ratio)

    def withdraw(self) -> bool:
        """Take one extra attempt if the budget allows it."""
        if self._balance >= 1.0 - 1e-9:
            self._balance -= 1.0
            self.extra += 1
            return True
        self.denied += 1
        return False
