"""``lightly-graft bench``: a suite of recipes (arms) x seeds, trained, evaluated
and tabulated; see ``docs/benchmarks.md``.

``suite`` (the suite file), ``budget`` (counted FLOPs and budget matching),
``runner`` (``run_suite``, resume), ``evaluate`` (metrics with hyperparameters
chosen on a validation split), ``report`` (tables, claims, figures).
"""

from __future__ import annotations

from lightly_graft.bench.runner import report_only, run_suite
from lightly_graft.bench.suite import Suite, load_suite

__all__ = ["Suite", "load_suite", "report_only", "run_suite"]
