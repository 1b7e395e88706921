"""Guards around calls, one module each: circuit breaker (``_breaker``), rate
limiter (``_limiter``), bulkhead (``_bulkhead``), hedging budget (``_hedge``),
on the loop helpers they share (``_loop``); and work that may outlive its
caller (``_linger``).

Private: users import these names from ``cohort``.
"""
