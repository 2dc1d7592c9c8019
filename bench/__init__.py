"""Benchmarks of tastypy against the raw limit, diskcache, sqlitedict and shelve.

Run ``python -m bench --help`` from the repository root. Each measurement
runs in a fresh interpreter (``python -m bench.worker``); the driver
(``bench.run``) repeats it, takes medians and writes ``docs/benchmarks.md``
with the plots in ``docs/_static/``. ``python -m bench.profile`` profiles
the hot paths with cProfile.
"""
