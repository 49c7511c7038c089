"""Benchmarks: learning quality (`python -m bench.quality`) and throughput
(`python -m bench.throughput`)."""
