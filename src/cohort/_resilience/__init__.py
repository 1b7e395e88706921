"""Guards around calls: circuit breaker, rate limiter, bulkhead, hedging
budget (``_guards``) and work that may outlive its caller (``_linger``).

Private: users import these names from ``cohort``.
"""
