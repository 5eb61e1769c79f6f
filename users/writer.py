"""WriterUser: changes rows over HTTP at a set rate and mix; every write goes into the ledger first.

Thin, like Locust's own contrib users: the run (``environment.loadtest.run``) owns the account, the
ledger and the outcome of each write; this user paces, and reports each write to Locust.
"""
from __future__ import annotations

import time

from locust import User, constant, constant_pacing, constant_throughput, task


class WriterUser(User):
    fixed_count = 10  # set from --writers at start-up

    def wait_time(self):
        return self._pace(self)

    def on_start(self):
        o = self.environment.parsed_options
        self._pace = constant_throughput(o.write_rate) if o.write_rate > 0 else constant(0)
        run = self.environment.loadtest.run
        self.writer = run.new_writer() if run is not None else None   # waits at the start barrier
        if self.writer is None:  # more writer users than provisioned writer accounts
            self._pace = constant(1)
        elif o.step_load:
            self._pace = self._stepped

    def _stepped(self, _user):
        # Locust's constant_throughput keeps its state on the user, so its rate can change step by step
        return constant_pacing(1.0 / self.writer.rate())(self)

    @task
    def write(self):
        if self.writer is None or self.writer.done:
            return
        start = time.perf_counter()
        name, exc = self.writer.write()
        self.environment.events.request.fire(
            request_type="SQL", name=name, response_time=(time.perf_counter() - start) * 1000.0,
            response_length=0, exception=exc, context={})
