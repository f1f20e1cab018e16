"""Benchmarks of slurmbatch against the local cluster (``python -m benchmarks``)."""
