"""Benchmarks that ship with the library (``meteora bench ...``)."""
