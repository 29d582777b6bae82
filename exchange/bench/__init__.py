"""Benchmarks behind `hetex bench ...` (measured figures, no assertions)."""
