"""A web request fan-out service built with cohort (example 1).

``GET /product/{key}`` on the fan-out service asks four kinds of backend at
once and answers with one JSON document:

* ``catalog``: three replicas, read with a quorum of two (``cohort.Quorum``);
  each replica call has its own timeout (``spawn(..., timeout=)``);
* ``pricing``: three replicas, the next one asked only when the previous is
  slow or fails (``cohort.hedge``);
* ``image``: three CDN mirrors, the first answer wins (``cohort.FirstWins``);
* ``reviews``: optional enrichment (``critical=False``), shown only when it
  arrives before the rest; it never fails nor slows the request.

The whole request runs under one deadline (the group's ``timeout=``), which
also travels to the backends in an ``x-timeout`` header computed from
``cohort.current_deadline()``.

Modules: ``backends`` (simulated backends: real HTTP servers whose latency
and failures are a deterministic function of a seed), ``service`` (the
fan-out API), ``load`` (a load generator and its latency summary) and
``stack`` (all of it started together, on ``cohort.examples.servers``).
Run ``python examples/fanout_service.py``.
"""
