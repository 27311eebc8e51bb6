"""The fault harness (`make faults`, `python -m tests.faults`): not part of `make test`.

No module here is named test_*.py, so pytest never collects it; it runs as a script with its
own PostgreSQL and Redis, which it stops, freezes and restarts. See __main__.py.
"""
