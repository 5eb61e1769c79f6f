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

    def rate(self) -> float:
        """Writes/s this writer offers now (the run's stepped load, or --write-rate)."""
        return self.run.write_rate_now()

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
            user = self.account.user
            idxs = [ledger.begin(user, stmt.op, stmt.pk, stmt.values, owner=stmt.owner, group=stmt.group)]
            idxs += [ledger.begin(user, stmt.op, pk, values, owner=stmt.owner, group=stmt.group)
                     for pk, values in stmt.rows]   # a multi-row INSERT: one write per row
            exc = classify(self.http, ledger, idxs, self.gen, stmt)
            if isinstance(exc, (ConnectError, OutcomeUnknown)):   # the server was not there to answer
                run.write_failures.append((time.time(), "refused" if isinstance(exc, ConnectError) else "unknown"))
            return stmt.name, exc
        finally:
            run.writes_in_flight -= 1


def classify(http, ledger, idxs: list, gen, stmt) -> Exception | None:
    """Send one statement and record its outcome on every write (row) it holds."""
    exc = None
    try:
        results = http.sql(stmt.sql, stmt.params)
        # an UPDATE/DELETE that matched no row changed nothing, so nothing is to be delivered
        rows = results[-1].row_count if results else 0
        if rows >= len(idxs):
            outcome = OUTCOME_ACK
        elif rows <= 0:
            outcome = OUTCOME_REJECTED
            exc = KalamError(f"{stmt.name} affected no row")
        else:   # a multi-row INSERT that committed some rows: which ones, nobody knows
            outcome = OUTCOME_UNKNOWN
            exc = KalamError(f"{stmt.name} affected {rows} of {len(idxs)} rows")
        committed = {OUTCOME_ACK: True, OUTCOME_REJECTED: False}.get(outcome)
    except OutcomeUnknown as e:
        outcome, committed, exc = OUTCOME_UNKNOWN, None, e
    except HttpError as e:
        # 5xx: the server may have committed before failing; 4xx (incl. 429): it did not
        outcome = OUTCOME_UNKNOWN if (e.status or 0) >= 500 else OUTCOME_REJECTED
        committed, exc = (None if outcome == OUTCOME_UNKNOWN else False), e
    except ConnectError as e:  # nothing was sent
        outcome, committed, exc = OUTCOME_REJECTED, False, e
    # an unknown outcome has no answer time, except a 5xx (the server answered, not knowing)
    t_ack = None if isinstance(exc, OutcomeUnknown) else time.time()
    for idx in idxs:
        ledger.finish(idx, outcome, t_ack=t_ack)
    gen.confirm(stmt, committed)
    return exc
