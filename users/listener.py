"""ListenerUser: one WebSocket with live subscriptions; every arrival is recorded by its session.

Thin: the run (``environment.loadtest.run``) owns the session, which outlives this user (listeners
stay connected through the drain); this user subscribes, reports it, and forces reconnects (L9).
"""
from __future__ import annotations

import time

from locust import User, constant, task


class ListenerUser(User):
    fixed_count = 20  # set from --listeners at start-up
    wait_time = constant(0.5)

    def on_start(self):
        self.run = self.environment.loadtest.run
        self.session = self.run.new_listener() if self.run is not None else None
        if self.session is None:
            return
        if not self.run.wait_to_join(self.session):   # --step-listeners: its step never came
            self.session = None
            return
        self.reconnect_every = self.run.reconnect_every(self.session)
        start = time.perf_counter()
        exc = self.run.start_listener(self.session)
        self.environment.events.request.fire(
            request_type="WS", name="subscribe (until ready)", response_time=(time.perf_counter() - start) * 1000.0,
            response_length=0, exception=exc, context={})
        self.next_reconnect = time.time() + self.reconnect_every

    @task
    def keep_listening(self):
        # Reading happens in the session's own greenlet. This task only forces the periodic reconnect (L9).
        if self.session is None or not self.reconnect_every or self.run.finished:
            return
        if time.time() >= self.next_reconnect and self.run.writers_may_start.is_set():
            self.next_reconnect = time.time() + self.reconnect_every
            self.session.force_reconnect()

    def on_stop(self):
        # The session stays open: the run drains and reads the server's counters before closing it.
        pass
