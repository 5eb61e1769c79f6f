"""Loop timers with sub-millisecond precision (Linux timerfd), for the delay fault.

asyncio sleeps in epoll_wait, whose timeout is whole milliseconds rounded up, so ``loop.call_later``
fires 0.4-1.9 ms late (median 0.9 ms on the 2-core CI machine): as large as the latency error the
harness benchmark has to resolve. A timerfd becomes readable at its nanosecond deadline and the loop
wakes on that readiness at once. One timerfd serves every pending call (a heap, armed for the
earliest). Where timerfd is missing (not Linux), ``loop.call_at`` is used: same API, coarser.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import heapq
import itertools
import os
import time

_CLOCK_MONOTONIC = 1  # what time.monotonic() and asyncio's loop.time() read on Linux
_TFD_TIMER_ABSTIME = 1
_GROUP_S = 20e-6  # calls due this close to now run in the same wake-up


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create  # noqa: B018 -- AttributeError when the platform has none
        libc.timerfd_settime  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


class Handle:
    __slots__ = ("callback", "args", "cancelled")

    def __init__(self, callback, args):
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class DueTimer:
    """``call_at(when, callback, *args)`` on ``time.monotonic()``'s clock; returns a cancellable handle."""

    def __init__(self, loop):
        self.loop = loop
        self._heap: list = []
        self._n = itertools.count()
        self._armed = None  # deadline the timerfd is set to
        self._libc = _libc()
        self._fd = -1
        if self._libc is not None:
            fd = self._libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                loop.add_reader(fd, self._fire)

    @property
    def precise(self) -> bool:
        return self._fd >= 0

    def call_at(self, when: float, callback, *args):
        if self._fd < 0:
            return self.loop.call_at(when, callback, *args)
        h = Handle(callback, args)
        heapq.heappush(self._heap, (when, next(self._n), h))
        if self._armed is None or when < self._armed:
            self._arm(when)
        return h

    def _arm(self, when) -> None:
        self._armed = when
        sec = int(when)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, max(1, int((when - sec) * 1e9))))
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def _fire(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            pass
        self._armed = None
        heap = self._heap
        limit = time.monotonic() + _GROUP_S
        while heap and heap[0][0] <= limit:
            h = heapq.heappop(heap)[2]
            if not h.cancelled:
                h.callback(*h.args)
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        if heap and (self._armed is None or heap[0][0] < self._armed):  # callbacks may have armed later
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._heap.clear()
