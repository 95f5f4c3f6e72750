"""The gchat benchmark: a server under test, load processes on the engine, figures.

`python -m gchat.bench` (or `bin/gchat-bench`) runs it; importing it never monkey-patches.
"""
