"""One writer's writes: each goes into the ledger before it is sent, and its outcome is classified.

The outcome decides what the verifier expects: an acknowledged write must be delivered; a rejected
one must not; an unknown one (sent, no answer) may or may not be.
"""
from __future__ import annotations

import time

from checks.model import OUTCOME_ACK, OUTCOME_REJECTED, OUTCOME_UNKNOWN
from kalamclient.errors import ConnectError, HttpError, KalamError, OutcomeUnknown


class Writer:
    """The run's side of a WriterUser: an account, its HTTP client, its write generator."""

    def __init__(self, run, account, http, gen):
        self.run = run
        self.account = account
        self.http = http
        self.gen = gen

    @property
    def done(self) -> bool:
        return self.run.finished or self.run.writing_closed

    def write(self) -> tuple[str, Exception | None]:
        """One write: (its statistics name, the error to report or None)."""
        run = self.run
        table = self.gen.next_table()
        ledger = run.ledgers[table]
        stmt = self.gen.next_write(table, ledger.next_wseq(self.account.user))
        run.writes_in_flight += 1   # Run.stop_writing waits for it
        try:
            idx = ledger.begin(self.account.user, stmt.op, stmt.pk, stmt.values, owner=stmt.owner, group=stmt.group)
            exc = classify(self.http, ledger, idx, self.gen, stmt)
            if isinstance(exc, (ConnectError, OutcomeUnknown)):   # the server was not there to answer
                run.write_failures.append((time.time(), "refused" if isinstance(exc, ConnectError) else "unknown"))
            return stmt.name, exc
        finally:
            run.writes_in_flight -= 1


def classify(http, ledger, idx: int, gen, stmt) -> Exception | None:
    exc = None
    try:
        results = http.sql(stmt.sql, stmt.params)
        # an UPDATE/DELETE that matched no row changed nothing, so nothing is to be delivered
        committed = bool(results) and results[-1].row_count >= 1
        ledger.finish(idx, OUTCOME_ACK if committed else OUTCOME_REJECTED, t_ack=time.time())
        gen.confirm(stmt, committed)
        if not committed:
            exc = KalamError(f"{stmt.name} affected no row")
    except OutcomeUnknown as e:
        ledger.finish(idx, OUTCOME_UNKNOWN)
        gen.confirm(stmt, None)
        exc = e
    except HttpError as e:
        # 5xx: the server may have committed before failing; 4xx (incl. 429): it did not
        outcome = OUTCOME_UNKNOWN if (e.status or 0) >= 500 else OUTCOME_REJECTED
        ledger.finish(idx, outcome, t_ack=time.time())
        gen.confirm(stmt, None if outcome == OUTCOME_UNKNOWN else False)
        exc = e
    except ConnectError as e:  # nothing was sent
        ledger.finish(idx, OUTCOME_REJECTED, t_ack=time.time())
        gen.confirm(stmt, False)
        exc = e
    return exc
