"""Benchmarks that print speed ratios measured side by side in one run (``make bench``).

Run them as modules (``python -m bench.step_overhead``) so that this package, and
with it the torchvision fix of ``engine``, loads before any benchmark imports timm.
"""

import engine  # noqa: F401
