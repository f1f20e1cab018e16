"""Submission throughput side by side: slurmbatch and the alternatives on one local cluster, in one run.

``python -m benchmarks.compare [--quick|--full]`` brings up its own local cluster, makes the contenders'
environments once, runs every contender's drivers (:mod:`.contenders`, :mod:`.measurements`) and writes
``benchmarks/results/<date>.json``, ``.md`` and ``.png`` (:mod:`.report`).
"""
