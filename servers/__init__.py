"""Managed servers for runs and tests: the real KalamDB binary (:mod:`servers.kalamdb`).

The stand-in has its own launcher, :class:`standin.testing.StandinProcess`, of the same shape."""
from .kalamdb import GENERATE, KalamdbError, KalamdbProcess, find_kalamdb_bin, kalamdb_bin_candidate

__all__ = ["KalamdbProcess", "KalamdbError", "find_kalamdb_bin", "kalamdb_bin_candidate", "GENERATE"]
