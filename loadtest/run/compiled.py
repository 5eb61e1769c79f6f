"""The compiled part of this package (loadtest/run/_speedups.c, built at install where a C compiler is found):
``speedups`` is that module, configured, or None where the Python runs (no compiler, or
KALAMDB_LT_PURE_PYTHON=1). listening.py and locuststats.py take their compiled steps from here."""
from __future__ import annotations

import importlib
import os

from checks.model import KIND_BY_CHANGE_TYPE, SEQ_EPOCH_MS, SEQ_TIME_SHIFT

speedups = None
if not os.environ.get("KALAMDB_LT_PURE_PYTHON"):
    try:  # by name: the compiled module imports nothing of the package
        speedups = importlib.import_module(__package__ + "._speedups")
    except ImportError:
        pass
    else:
        speedups.configure(KIND_BY_CHANGE_TYPE, SEQ_EPOCH_MS, SEQ_TIME_SHIFT)
