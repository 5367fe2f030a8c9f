"""Hostile and odd inputs for ``benchmarks/reliability.py``: one module per area, each with ``CASES``."""
