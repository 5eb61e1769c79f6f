"""Test hooks of a distributed run: environment variables of ONE process, for tests only.

    KALAMDB_LT_CLOCK_OFFSET=0.5            add 0.5 s to every time.time() this process takes
    KALAMDB_LT_TEST_DISCARD_ARRIVALS=0.05  this worker's listeners throw away 5 % of the change
                                           notifications they receive (client-side loss)
    KALAMDB_LT_TEST_STALL=5:2.5            5 s after writing starts, this process's event loop stands
                                           still for 2.5 s (a blocking call, as a GC pause or a swapped-out
                                           process would): nothing in it reads or writes meanwhile

The plugin installs them at init when their variable is set (``install_clock_offset``, ``discard_share``,
``stall_plan``).
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
ENV_STALL = "KALAMDB_LT_TEST_STALL"


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


def stall_plan() -> tuple | None:
    """KALAMDB_LT_TEST_STALL ("AFTER:FOR", seconds): when, after writing starts, and how long this process's
    event loop stands still; None when unset."""
    raw = os.environ.get(ENV_STALL, "").strip()
    if not raw:
        return None
    after, _, span = raw.partition(":")
    log.warning("test hook %s=%s: this process's event loop will stand still", ENV_STALL, raw)
    return float(after), float(span)


def block_loop(seconds: float) -> None:
    """Block the whole process (the unpatched time.sleep: no greenlet runs meanwhile)."""
    from gevent import monkey
    log.warning("test hook %s: blocking the event loop for %.1f s", ENV_STALL, seconds)
    monkey.get_original("time", "sleep")(seconds)


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
