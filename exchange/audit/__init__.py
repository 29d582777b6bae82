"""Regulator audit bundles: format, record facts and totals, the streaming writer and the standalone verifier."""
