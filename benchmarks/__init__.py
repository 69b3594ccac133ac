"""Benchmarks of the bot against the local emulators: ``python -m benchmarks.<name>``.

Each benchmark prints a table and writes its figures to ``benchmarks/results/<name>.json``
(git-ignored; ``docs/PERFORMANCE.md`` keeps the figures of a reference run).
"""
