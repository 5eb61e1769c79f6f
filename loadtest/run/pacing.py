"""Client-side pacing of authentications.

KalamDB allows 20 auth requests per second per client IP, loopback included, and counts every login,
refresh and WebSocket authentication (protocol §1.4, §6.6). Thirty users starting at once would be
refused, so every login and WebSocket auth of this process goes through one token bucket.
"""
from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None):
        self.rate = max(rate, 0.001)
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block (sleeping, never spinning) until one token is available."""
        while True:
            with self._lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                wait = (1.0 - self.tokens) / self.rate
            time.sleep(wait)
