"""Writes as they go on the wire and into the ledger: a multi-row INSERT (--rows-per-insert) is one
statement, and one ledger write per row with the statement's outcome."""
from types import SimpleNamespace

import pytest

from checks.ledger import WriteLedger
from checks.model import OP_INSERT, OUTCOME_ACK, OUTCOME_REJECTED, OUTCOME_UNKNOWN, Workload
from kalamclient.errors import HttpError, OutcomeUnknown
from kalamclient.results import QueryResult
from loadtest.run.workloads import AGENT_CHAT, SHARED, OpMix, WriteGenerator, events_table, messages_table
from loadtest.run.writes import Writer

INSERTS_ONLY = OpMix(1.0, 0.0, 0.0)


def _ledger(table):
    return WriteLedger(Workload(table=table.key, table_kind=table.kind, content_columns=table.content_columns))


class FakeHttp:
    def __init__(self, answer):
        self.answer = answer
        self.sent = []

    def sql(self, sql, params):
        self.sent.append((sql, params))
        if isinstance(self.answer, Exception):
            raise self.answer
        return [QueryResult(row_count=self.answer)]


def _writer(table, gen, answer):
    run = SimpleNamespace(ledgers={table.key: _ledger(table)}, writes_in_flight=0, write_failures=[],
                          finished=False, writing_closed=False)
    return Writer(run, SimpleNamespace(user="w1"), FakeHttp(answer), gen), run.ledgers[table.key]


def test_a_multi_row_insert_is_one_statement_with_one_ledger_write_per_row():
    gen = WriteGenerator(SHARED, "ns", "w1", [], INSERTS_ONLY, rows_per_insert=3)
    writer, ledger = _writer(events_table("ns"), gen, 3)
    name, exc = writer.write()
    assert (name, exc) == ("events INSERT", None)
    (sql, params), = writer.http.sent
    # literals: KalamDB takes at most 50 parameters per statement, and 50 rows of 4 columns are 200
    pay = [gen._payload(n) for n in (1, 2, 3)]
    assert sql == ("INSERT INTO ns.events (id, writer, n, payload) VALUES "
                   f"('w1:1', 'w1', 1, '{pay[0]}'), ('w1:2', 'w1', 2, '{pay[1]}'), ('w1:3', 'w1', 3, '{pay[2]}')")
    assert params == []
    assert [(ledger.pk(i), ledger.wseq(i), ledger.op(i), ledger.outcome(i)) for i in range(len(ledger))] == [
        ("w1:1", 1, OP_INSERT, OUTCOME_ACK), ("w1:2", 2, OP_INSERT, OUTCOME_ACK), ("w1:3", 3, OP_INSERT, OUTCOME_ACK)]
    assert sorted(gen.live["events"]) == ["w1:1", "w1:2", "w1:3"]   # later updates and deletes may pick any row
    writer.write()
    assert ledger.pk(3) == "w1:4" and len(ledger) == 6


@pytest.mark.parametrize("answer, outcome, live", [
    (0, OUTCOME_REJECTED, 0),                              # nothing committed
    (2, OUTCOME_UNKNOWN, 0),                               # some rows committed: which, nobody knows
    (HttpError("busy", status=429), OUTCOME_REJECTED, 0),
    (HttpError("boom", status=500), OUTCOME_UNKNOWN, 0),
    (OutcomeUnknown("no answer"), OUTCOME_UNKNOWN, 0),
])
def test_every_row_of_a_statement_gets_the_statements_outcome(answer, outcome, live):
    gen = WriteGenerator(SHARED, "ns", "w1", [], INSERTS_ONLY, rows_per_insert=3)
    writer, ledger = _writer(events_table("ns"), gen, answer)
    _, exc = writer.write()
    assert exc is not None
    assert [ledger.outcome(i) for i in range(3)] == [outcome] * 3
    assert len(gen.live["events"]) == live


def test_a_multi_row_chat_insert_goes_into_one_conversation_and_streams_nothing():
    gen = WriteGenerator(AGENT_CHAT, "ns", "w1", ["h01", "h02"], INSERTS_ONLY, rows_per_insert=2)
    writer, ledger = _writer(messages_table("ns"), gen, 2)
    for _ in range(5):
        writer.write()
    assert len(ledger) == 10 and gen.streaming is None
    for sql, params in writer.http.sent:
        human = sql.split("'")[1]
        assert sql.startswith(f"EXECUTE AS USER '{human}' (INSERT INTO ns.messages (") and params == []
        assert sql.count(f"'conv_{human}', 'user', 'question ") == 2 and sql.endswith("))")
    assert {ledger.owner(i) for i in (0, 1)} == {writer.http.sent[0][0].split("'")[1]}


def test_a_quote_in_a_literal_is_doubled():
    from loadtest.run.workloads import _values
    assert _values([("a'b", 1), ("c", 2)]) == ("('a''b', 1), ('c', 2)", [])
    assert _values([("a'b", 1)]) == ("($1, $2)", ["a'b", 1])


def test_one_row_per_insert_is_the_single_row_statement_of_before():
    gen = WriteGenerator(SHARED, "ns", "w1", [], INSERTS_ONLY)
    writer, ledger = _writer(events_table("ns"), gen, 1)
    writer.write()
    assert writer.http.sent[0][0] == "INSERT INTO ns.events (id, writer, n, payload) VALUES ($1, $2, $3, $4)"
    assert len(ledger) == 1 and ledger.outcome(0) == OUTCOME_ACK


def _options(**kw):
    o = dict(listeners=20, slow_listeners=0, slow_pause=2.0, slow_every=5.0, slow_rcvbuf=4096, rows_per_insert=1,
             server_log="", host=None)
    o.update(kw)
    return SimpleNamespace(**o)


@pytest.mark.parametrize("kw, says", [
    ({"rows_per_insert": 0}, "--rows-per-insert: 0 is out of range (must be ≥ 1 and ≤ 999)"),
    ({"slow_listeners": 21}, "--slow-listeners: 21 is more than --listeners (20)"),
    ({"slow_listeners": 2, "slow_pause": 5.0}, "--slow-pause: 5 s must be shorter than --slow-every (5 s)"),
    ({"slow_rcvbuf": 100}, "--slow-rcvbuf: 100 is out of range (must be ≥ 256)"),
    ({"server_log": "/nonexistent/server.log"}, "--server-log: '/nonexistent/server.log' is not a file"),
])
def test_slow_consumer_and_burst_options_are_checked_before_anything_starts(kw, says):
    from loadtest.options import option_errors
    assert option_errors(_options(**kw)) == [says]
    assert option_errors(_options(slow_listeners=2, rows_per_insert=50)) == []


def test_a_writers_live_rows_hold_no_gc_tracked_object_and_every_pick_is_a_live_row():
    # every full collection of the cyclic GC walks every tracked object: an (owner, row) tuple per live row
    # stalled the generator's event loop longer the longer a run went (213 ms at 170k rows)
    import gc

    from gc_growth import tracked_objects_added
    gen = WriteGenerator("both", "ns", "w1", ["h1", "h2"], OpMix(0.5, 0.3, 0.2), stream_tokens=2)
    n = {"events": 0, "messages": 0}

    def burst(k):
        for _ in range(k):
            table = gen.next_table()
            n[table] += 1
            stmt = gen.next_write(table, n[table])
            if stmt.op != OP_INSERT:       # updates and deletes pick a row this writer still has
                assert stmt.pk in gen.live[table]
                if table == "messages":
                    assert stmt.owner == gen.owner["messages"][stmt.pk]
            gen.confirm(stmt, True)
    burst(3000)
    assert tracked_objects_added(lambda: burst(6000)) < 100
    for table in ("events", "messages"):
        keys = gen._keys[table]
        assert sorted(f"w1:{m}" for m in keys.keys) == sorted(gen.live[table])
        assert all(keys.keys[i] == k for k, i in keys.at.items())
        # nor a tracked container of one entry per row: a full collection would visit every entry
        assert not any(map(gc.is_tracked, (gen.live[table], gen.owner[table], keys.at)))
    assert set(gen.owner["messages"]) == set(gen.live["messages"]) and not gen.owner["events"]


def test_a_writers_live_rows_hold_their_own_size():
    # orjson's bytes keep the 4 KiB buffer they were written into: each live row of a writer held 4,097 bytes
    import tracemalloc

    gen = WriteGenerator(SHARED, "ns", "w1", [], INSERTS_ONLY, payload_bytes=100)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1, 2001):
            gen.confirm(gen.next_write(gen.next_table(), n), True)
        per_row = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    assert len(gen.live["events"]) == 2000
    assert per_row < 1000, per_row
