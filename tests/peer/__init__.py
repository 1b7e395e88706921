"""CPython's own asyncio test suites, run against cohort through thin renaming shims.

``shims`` maps the asyncio names the suites use onto cohort's API (names and
message wording only), ``_harness`` loads a private copy of each CPython test
module with those names in its namespace, and ``allowance`` lists every test
that still fails, with the reason.
"""
