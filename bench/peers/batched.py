"""The listener session's reader with ``LiveConnection.recv_many`` (every event of one wake-up per call).

A local stand-in for the change proposed to loadtest/run/listening.py (``ListenerSession._read_loop``), so that
bench/peers_bench.py can measure it (receiver ``pipeline-batch``) without editing that file: the loop below
is the session's loop with ``recv`` replaced by ``recv_many`` and ``_dispatch`` called per event.
"""
from __future__ import annotations

import time

import gevent

from loadtest.run import listening


def _read_loop(self) -> None:
    flush = self._flush_deliveries
    dispatch = self._dispatch
    while not self.closing:
        evs = self.conn.recv_many(timeout=0.25)
        if not evs:
            if flush is not None:
                flush()
            continue
        ev = None
        for ev in evs:
            if not dispatch(ev):
                break
        else:
            continue
        # the connection ended (a Closed event is always the last of a batch)
        if self.closing:
            return
        if not _ended(self, ev):
            return


def _ended(self, ev) -> bool:
    """The tail of ListenerSession._read_loop after a Closed; False when the session is over."""
    now = time.time()
    for st in self.subs.values():
        st.log.disconnected(now)
    record = {"t": now, "code": ev.code, "listener": self.account.user, "expected": self.forced, "down_s": None}
    self.disconnect_log.append(record)
    if self.forced:
        self.forced = False
        pause = getattr(self.run.options, "reconnect_pause", 0.0)
        if pause > 0:
            gevent.sleep(pause)
    else:
        self.disconnects[ev.code] = self.disconnects.get(ev.code, 0) + 1
        listening.log.warning("listener %s: connection closed unexpectedly (code %s %s); resuming",
                              self.account.user, ev.code, ev.reason)
    ok = self._resume()
    record["down_s"] = time.time() - now
    return ok


def install() -> None:
    listening.ListenerSession._read_loop = _read_loop
