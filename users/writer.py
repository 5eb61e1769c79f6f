"""WriterUser: changes rows over HTTP at a set rate and mix; every write goes into the ledger first."""
from __future__ import annotations

import time

from locust import User, constant, constant_throughput, task

from checks.model import OUTCOME_ACK, OUTCOME_REJECTED, OUTCOME_UNKNOWN
from kalamclient.errors import ConnectError, HttpError, KalamError, OutcomeUnknown
from loadtest.plugin import current_run
from loadtest.workloads import WriteGenerator


class WriterUser(User):
    fixed_count = 10  # set from --writers at start-up

    def wait_time(self):
        return self._pace(self)

    def on_start(self):
        o = self.environment.parsed_options
        self._pace = constant_throughput(o.write_rate) if o.write_rate > 0 else constant(0)
        self.run = current_run(self.environment)
        self.account = self.run.claim_writer() if self.run else None
        if self.account is None:  # more writer users than provisioned writer accounts
            self._pace = constant(1)
            return
        self.http = self.run.login(self.account)
        self.gen = WriteGenerator(self.run.workload, self.run.prov.namespace, self.account.user, self.run.humans,
                                  self.run.mix, stream_tokens=o.stream_tokens, payload_bytes=o.payload_bytes)
        self.run.writers_may_start.wait()

    @task
    def write(self):
        if self.account is None or self.run.finished:
            return
        table = self.gen.next_table()
        ledger = self.run.ledgers[table]
        stmt = self.gen.next_write(table, ledger.next_wseq(self.account.user))
        idx = ledger.begin(self.account.user, stmt.op, stmt.pk, stmt.values, owner=stmt.owner, group=stmt.group)
        start = time.perf_counter()
        exc = None
        try:
            results = self.http.sql(stmt.sql, stmt.params)
            # an UPDATE/DELETE that matched no row changed nothing, so nothing is to be delivered
            committed = bool(results) and results[-1].row_count >= 1
            ledger.finish(idx, OUTCOME_ACK if committed else OUTCOME_REJECTED, t_ack=time.time())
            self.gen.confirm(stmt, committed)
            if not committed:
                exc = KalamError(f"{stmt.name} affected no row")
        except OutcomeUnknown as e:
            ledger.finish(idx, OUTCOME_UNKNOWN)
            self.gen.confirm(stmt, None)
            exc = e
        except HttpError as e:
            # 5xx: the server may have committed before failing; 4xx (incl. 429): it did not
            outcome = OUTCOME_UNKNOWN if (e.status or 0) >= 500 else OUTCOME_REJECTED
            ledger.finish(idx, outcome, t_ack=time.time())
            self.gen.confirm(stmt, None if outcome == OUTCOME_UNKNOWN else False)
            exc = e
        except ConnectError as e:  # nothing was sent
            ledger.finish(idx, OUTCOME_REJECTED, t_ack=time.time())
            self.gen.confirm(stmt, False)
            exc = e
        self.environment.events.request.fire(
            request_type="SQL", name=stmt.name, response_time=(time.perf_counter() - start) * 1000.0,
            response_length=0, exception=exc, context={})
