"""An ETL pipeline over a local document server (example 2).

``server`` generates documents from a seed (some slow, some answering 503
once, some missing, some malformed) and serves them with Starlette;
``pipeline`` fetches them (async, retried), parses them in worker processes
and stores them in SQLite in batches, with a dead-letter file for what fails
for good. Run ``python examples/etl.py``.
"""
