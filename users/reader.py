"""ReaderUser: simple SELECTs at a set rate during the load (S6 query latency; S3 "still answers queries")."""
from __future__ import annotations

import time

from locust import User, constant, constant_throughput, task

from kalamclient.errors import KalamError


class ReaderUser(User):
    fixed_count = 0  # set from --readers at start-up

    def wait_time(self):
        return self._pace(self)

    def on_start(self):
        o = self.environment.parsed_options
        self._pace = constant_throughput(o.reader_rate) if o.reader_rate > 0 else constant(0)
        self.run = self.environment.loadtest.run
        self.account = self.run.claim_reader() if self.run else None
        if self.account is None:  # more reader users than provisioned reader accounts
            self._pace = constant(1)
            return
        self.http = self.run.login(self.account)
        ns = self.run.prov.namespace
        table = "events" if any(t.key == "events" for t in self.run.prov.tables) else "messages"
        self.queries = [(f"SELECT COUNT(*) {table}", f"SELECT COUNT(*) FROM {ns}.{table}"),
                        (f"SELECT LIMIT 10 {table}", f"SELECT * FROM {ns}.{table} LIMIT 10")]
        self.turn = 0
        self.run.writers_may_start.wait()  # reads happen during the load, like the writes

    @task
    def read(self):
        if self.account is None or self.run.finished:
            return
        name, sql = self.queries[self.turn % len(self.queries)]
        self.turn += 1
        start = time.perf_counter()
        exc = None
        try:
            self.http.sql(sql, timeout=30.0)
        except KalamError as e:
            exc = e
        ms = (time.perf_counter() - start) * 1000.0
        self.run.record_read(time.time(), ms, exc is None)
        self.environment.events.request.fire(request_type="SQL", name=name, response_time=ms,
                                             response_length=0, exception=exc, context={})
