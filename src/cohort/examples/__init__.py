"""The building blocks of the examples and of ``cohort demo``, shipped with the package.

``cohort.examples.fanout`` is a web fan-out service (Starlette on uvicorn)
over simulated backends, with a load generator; ``cohort.examples.etl`` is an
ETL pipeline over a local document server; ``cohort.examples.servers`` serves
ASGI apps on 127.0.0.1. They live in the package, not in ``examples/``, so
that ``cohort demo`` runs from an installed cohort, and their code is meant to
be read: ``examples/fanout_service.py`` and ``examples/etl.py`` are the
programs around them.

They need the web extras: ``pip install 'cohort[cli]'`` (or ``[examples]``).
They are example code, not part of cohort's stable API.
"""
