"""Benchmarks behind `hetex bench ...`: each module measures one part of the exchange."""
