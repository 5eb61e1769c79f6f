"""Test hooks of a distributed run: environment variables of ONE process, for tests only.

    KALAMDB_LT_CLOCK_OFFSET=0.5            add 0.5 s to every time.time() this process takes
    KALAMDB_LT_TEST_DISCARD_ARRIVALS=0.05  this worker's listeners throw away 5 % of the change
                                           notifications they receive (client-side loss)

The plugin installs them at init when their variable is set (``install_clock_offset``, ``discard_share``).
"""
from __future__ import annotations

import logging
import os
import random
import time

import kalamclient.ws
from kalamclient.events import Change

from ..run.listening import ListenerSession

log = logging.getLogger(__name__)

ENV_CLOCK_OFFSET = "KALAMDB_LT_CLOCK_OFFSET"
ENV_DISCARD = "KALAMDB_LT_TEST_DISCARD_ARRIVALS"


def install_clock_offset() -> float:
    """KALAMDB_LT_CLOCK_OFFSET (seconds): every time.time() of this process is shifted by it (a test
    hook standing in for a machine whose clock is off). Returns the offset (0.0 when unset)."""
    raw = os.environ.get(ENV_CLOCK_OFFSET, "").strip()
    if not raw:
        return 0.0
    offset = float(raw)
    if getattr(time.time, "_klt_offset", None) is None:
        real = time.time

        def shifted_time() -> float:
            return real() + offset

        shifted_time._klt_offset = offset
        time.time = shifted_time
        kalamclient.ws.kernel_stamp_shift_s = offset  # arrival stamps read the system clock too
        log.warning("test hook %s=%s: this process's clock reads %+.3f s off", ENV_CLOCK_OFFSET, raw, offset)
    return getattr(time.time, "_klt_offset", offset)


def discard_share() -> float:
    """KALAMDB_LT_TEST_DISCARD_ARRIVALS: the share of change notifications this worker's listeners throw away."""
    return float(os.environ.get(ENV_DISCARD, "0") or 0)


class DiscardingListenerSession(ListenerSession):
    """A listener session that throws away a share of the change notifications it receives, as a buggy
    client would (the verifier must catch it)."""

    discard_share = 0.0
    discard_rng = random.Random(0)
    discarded = 0

    def _dispatch(self, ev) -> bool:
        if ev.__class__ is Change and self.discard_rng.random() < self.discard_share:
            self.discarded += 1
            return True
        return super()._dispatch(ev)
