"""ListenerUser: one WebSocket with live subscriptions; every arrival is recorded by its session."""
from __future__ import annotations

import time

from locust import User, constant, task

from loadtest.plugin import current_run


class ListenerUser(User):
    fixed_count = 20  # set from --listeners at start-up
    wait_time = constant(0.5)

    def on_start(self):
        self.run = current_run(self.environment)
        self.account = self.run.claim_listener() if self.run else None
        self.session = None
        if self.account is None:
            return
        o = self.environment.parsed_options
        index = self.run.prov.listeners.index(self.account)
        every = max(1, round(1 / o.reconnect_share)) if o.reconnect_share > 0 else 0
        self.reconnect_every = o.reconnect_every if (o.reconnect_every > 0 and every and index % every == 0) else 0
        self.next_reconnect = time.time() + self.reconnect_every
        self.session = self.run.new_listener_session(self.account, on_delivery=self._delivered)
        start = time.perf_counter()
        exc = None
        try:
            self.session.start(timeout=o.barrier_timeout)
            self.run.listener_ready(self.account)
        except Exception as e:  # reported, and the verdict for its subscriptions is inconclusive
            exc = e
            self.session.vanished = f"could not subscribe: {e}"
            self.run.listener_failed(self.account, str(e))
        self.environment.events.request.fire(
            request_type="WS", name="subscribe (until ready)", response_time=(time.perf_counter() - start) * 1000.0,
            response_length=0, exception=exc, context={})
        self.next_reconnect = time.time() + self.reconnect_every

    def _delivered(self, name: str, latency_ms: float) -> None:
        # Locust's statistics cannot hold negative times; the verifier keeps the true (signed) samples.
        self.environment.events.request.fire(request_type="WS", name=name, response_time=max(latency_ms, 0.0),
                                             response_length=0, exception=None, context={})

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
