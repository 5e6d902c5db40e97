"""The tools around the language: fmt, graph, init, schema, report, test.

Each module has one entry point the CLI calls; none imports Beam at import
time (``test`` and ``report`` import it inside their functions).
"""
