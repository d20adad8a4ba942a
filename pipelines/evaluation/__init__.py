"""Offline evaluation: the frozen evaluation set, metrics, bootstrap intervals, the gate,
the reviewer's report, and the quality benchmarks.

May import: everything below it (``data`` to ``registry``); never ``promotion``,
``serving``, ``orchestration`` or ``cli``.
"""
