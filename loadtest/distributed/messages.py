"""The limits of the master/worker protocol, and the clock both sides read (``loadtest.distributed``)."""
from __future__ import annotations

import time

CHUNK = 256 * 1024                 # bytes of payload per zmq message
MAX_TRANSFER = 512 * 1024 * 1024   # largest payload accepted (bounded buffers)
MISSING_GRACE = 5.0                # s a worker may stay "missing" for Locust before it is lost to the run
NTP_ROUNDS = 8                     # clock-offset rounds after the welcome and again at the end


def now() -> float:
    return time.time()  # looked up at call time (the clock-offset test hook may replace time.time)
