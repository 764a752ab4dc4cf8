"""Benchmarks: each prints ratios measured in one run and writes a report.

Not installed with the package: `rlhf-chat bench` imports this folder from the source
checkout. The modules may import `app`, `trainer` and `storage`, never `tests`.
"""
