"""The compiled parts (setup.py: kalamclient._speedups, loadtest.run._speedups, checks._speedups) are built where a
C compiler is, and give what the Python gives. Push mode's read is tested both ways in
tests/test_client_gevent.py; the record and the dispatch of a change here, on generated changes of every shape."""
from __future__ import annotations

import collections
import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from checks import model
from checks.arrivals import ArrivalLog, SubscriptionInfo
from checks.model import KIND_DELETE, KIND_INSERT, KIND_SNAPSHOT, KIND_UPDATE

ROOT = Path(__file__).resolve().parents[1]


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


def test_the_compiled_parts_are_built_and_used_where_a_c_compiler_is():
    if _compiler() is None:
        pytest.skip("no C compiler here: the install went on without the compiled parts")
    from kalamclient import ws
    assert ws._on_readable_compiled is not None, "kalamclient._speedups was not built: pip install -e . again"
    assert model.content_digest is not model.content_digest_python, "checks._speedups was not built"
    assert model.old_values_digest is not model.old_values_digest_python
    assert ArrivalLog.record_row is not ArrivalLog.record_row_python
    from loadtest.run import listening
    assert listening.speedups is not None, "loadtest.run._speedups was not built"


def test_the_python_is_used_when_asked_for():
    code = ("import kalamclient.ws as ws, checks.model as m, checks.arrivals as a, loadtest.run.listening as li;"
            "print(ws._on_readable_compiled is None, m.content_digest is m.content_digest_python,"
            " m.old_values_digest is m.old_values_digest_python,"
            " a.ArrivalLog.record_row is a.ArrivalLog.record_row_python, li.speedups is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env=dict(os.environ, KALAMDB_LT_PURE_PYTHON="1"))
    assert out.stdout.split() == ["True"] * 5, out.stdout + out.stderr


class Odd:
    """A value whose text is its own __format__."""

    def __format__(self, spec):
        return "odd\u00e9"


def _value(rng: random.Random):
    pick = rng.randrange(12)
    if pick == 0:
        return rng.randrange(-10**20, 10**20)
    if pick == 1:
        return rng.random() * 10 ** rng.randrange(-5, 20)
    if pick == 2:
        return rng.choice([True, False, None, float("nan"), float("inf"), -0.0])
    if pick == 3:
        return [rng.randrange(10), "x", None]
    if pick == 4:
        return {"k": rng.randrange(10)}
    if pick == 5:
        return Odd()
    if pick == 6:   # a lone surrogate: surrogatepass
        return "a\ud800b" + chr(rng.randrange(0xDC00, 0xE000))
    if pick == 7:
        return "".join(chr(rng.randrange(0x80, 0x10FFFF)) for _ in range(rng.randrange(8))
                       ).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if pick == 8:
        return ""
    if pick == 9:
        return "=\x1f\x00"
    return "".join(rng.choice("abcxyz019 _-:") for _ in range(rng.randrange(80)))


def test_the_digests_compiled_give_the_pythons_numbers_for_every_kind_of_row():
    if model.content_digest is model.content_digest_python:
        pytest.skip("checks._speedups was not built")
    c, py = model.content_digest, model.content_digest_python
    rng = random.Random(20261207)
    names = ["id", "writer", "n", "payload", "body", "é", "\ud83d", "", "_seq", "_deleted"]
    for i in range(3000):
        row = {k: _value(rng) for k in rng.sample(names, rng.randrange(len(names) + 1))}
        cols = rng.sample(names, rng.randrange(len(names) + 1))
        for values in (row, collections.OrderedDict(row), collections.ChainMap(row)):
            for columns in (cols, tuple(cols), iter(cols)):
                want = py(values, list(cols))
                assert c(values, columns) == want, (i, row, cols)
            for key in rng.sample(names, 2):
                want = model.old_values_digest_python(values, key)
                assert model.old_values_digest(values, key) == want, (i, row, key)
            assert model.old_values_digest(values) == model.old_values_digest_python(values)
    assert c({}, ()) == py({}, ()) == 0


def test_content_digest_compiled_raises_where_the_python_raises():
    if model.content_digest is model.content_digest_python:
        pytest.skip("checks._speedups was not built")
    for values, columns in (({}, [5]), ({"a": 1}, 5), ({"a": 1}, None)):
        with pytest.raises(TypeError):
            model.content_digest_python(values, columns)
        with pytest.raises(TypeError):
            model.content_digest(values, columns)
    for old in (5, None):   # not iterable
        with pytest.raises(TypeError):
            model.old_values_digest_python(old)
        with pytest.raises(TypeError):
            model.old_values_digest(old)
    # a present non-str column name is formatted, as in the f-string
    assert model.content_digest({5: "x"}, [5]) == model.content_digest_python({5: "x"}, [5])


COLUMNS = ("kind", "writer", "n", "seq", "t_recv", "digest", "old_digest", "epoch", "flags")


def _columns(log: ArrivalLog) -> dict:
    got = {c: getattr(log, c).tobytes() for c in COLUMNS}   # bytes: NaN times compare
    got["writers"] = list(log.writers)
    return got


def _row_value(rng: random.Random):
    """A value of writer, n or _seq as a row may carry it: usual, odd or wrong."""
    return rng.choice([None, "w1", "w2", "", "7", " 8 ", "-3", "x9", "1_000", 12, 2**70, True, 3.5, ["1"],
                       "99999999999999999999999", "\u0661\u0662", _value(rng)])


def _row(rng: random.Random):
    pick = rng.randrange(20)
    if pick == 0:
        return None
    if pick == 1:
        return ["not", "a", "dict"]
    if pick == 2:
        return collections.OrderedDict(id="a", writer="w1", n="4")
    row = {}
    for k in ("id", "writer", "n", "_seq", "body", "_deleted"):
        if rng.random() < 0.8:
            row[k] = _row_value(rng) if rng.random() < 0.1 else {
                "id": f"w{rng.randrange(3)}:{rng.randrange(9)}", "writer": f"w{rng.randrange(3)}",
                "n": str(rng.randrange(1, 99)), "_seq": str(rng.randrange(1, 2**62)), "body": _value(rng),
                "_deleted": rng.choice([True, False, "true", 1])}[k]
    return row


def _record_args(rng: random.Random) -> tuple:
    kind = rng.choice([KIND_SNAPSHOT, KIND_INSERT, KIND_UPDATE, KIND_DELETE, KIND_UPDATE, 7, True])
    old = rng.choice([None, {}, _row(rng), _row(rng)])
    seq = rng.choice([None, None, -5, "12", 2**64] + [rng.randrange(1, 2**62)] * 15)
    t = rng.choice([1_750_000_000.25, 1_750_000_000.5, 5, float("nan")])
    args = (kind, _row(rng), old, seq, t)
    return args[:rng.choice([2, 3, 4] + [5] * 17)]


def _outcome(f, *args):
    try:
        return f(*args)
    except Exception as exc:   # the same error type, where one is raised
        return type(exc)


def test_record_row_compiled_records_what_the_python_records(monkeypatch):
    if ArrivalLog.record_row is ArrivalLog.record_row_python:
        pytest.skip("checks._speedups was not built")
    rng = random.Random(20261208)
    info = SubscriptionInfo("l01", "events", content_columns=("body",))
    compiled, python = ArrivalLog(info), ArrivalLog(info)
    handed = []   # the calls the compiled one hands to the Python (the inputs it does not take itself)
    reference = ArrivalLog.record_row_python

    def counted(self, *args):
        if self is compiled:
            handed.append(args)
        return reference(self, *args)

    monkeypatch.setattr(ArrivalLog, "record_row_python", counted)
    raised = 0
    for i in range(6000):
        if i == 3000:   # the first half without subscribed() (the Python's first record starts an epoch)
            for log in (compiled, python):
                log.subscribed(1.0)
                log.disconnected(2.0)
                log.subscribed(3.0, resume_from=5)
        args = _record_args(rng)
        want = _outcome(reference, python, *args)
        assert _outcome(compiled.record_row, *args) == want, (i, args)
        raised += isinstance(want, type)
    assert _columns(compiled) == _columns(python)
    assert 0 < raised < 1200 and 500 < len(handed) < 4000, (raised, len(handed))   # both ways taken, often
    kinds = collections.Counter(compiled.kind.tolist())
    assert kinds[KIND_UPDATE] > 500 and kinds[KIND_DELETE] > 500   # the generator reached every branch
    flags = compiled.flags.tolist()
    assert all(sum(1 for f in flags if f & bit) > 50 for bit in (1, 2, 4)), collections.Counter(flags)


def test_record_row_appends_in_place_and_honours_a_held_buffer_as_array_append_does():
    """checks._speedups writes a column's item into the array's own storage (its layout checked at import);
    a column whose buffer is held (a memoryview) refuses as array.array.append refuses it, both ways."""
    from checks import _speedups
    if ArrivalLog.record_row is ArrivalLog.record_row_python:
        pytest.skip("checks._speedups was not built")
    if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11):
        assert _speedups.ARRAY_IN_PLACE == 1   # the layout this file was written against
    info = SubscriptionInfo("l01", "events", content_columns=("body",))
    logs = {"compiled": ArrivalLog(info), "python": ArrivalLog(info)}
    record = {"compiled": lambda log, *a: log.record_row(*a), "python": ArrivalLog.record_row_python}
    rows = [{"id": f"w1:{i}", "writer": "w1", "n": str(i), "_seq": str(1000 + i), "body": "x"} for i in range(1, 200)]
    for way, log in logs.items():
        log.subscribed(1.0)
        for i, row in enumerate(rows):   # across the arrays' regrowths (where the compiled one calls append)
            record[way](log, KIND_INSERT, row, None, 2**40 + i, 5.0 + i)
    assert _columns(logs["compiled"]) == _columns(logs["python"])
    assert logs["compiled"].n.tolist() == list(range(1, 200))
    for way, log in logs.items():
        held = memoryview(log.t_recv)
        with pytest.raises(BufferError):
            record[way](log, KIND_INSERT, rows[0], None, 7, 9.0)
        held.release()
        record[way](log, KIND_UPDATE, rows[1], rows[0], 8, 10.0)
    assert _columns(logs["compiled"]) == _columns(logs["python"])
    assert len(logs["compiled"].kind) == 201 and logs["compiled"].t_recv[-1] == 10.0


def _sessions():
    from loadtest.run.listening import ListenerSession
    from loadtest.run.provision import Account
    from loadtest.run.workloads import BOTH, subscriptions_for

    out = []
    for _ in range(2):
        deliveries = []
        s = ListenerSession(None, Account("l01", "pw"), subscriptions_for(BOTH, "ns", "l01"), batch_size=0,
                            on_delivery=lambda name, ms, d=deliveries: d.append((name, repr(ms))))
        for st in s.subs.values():
            st.log.subscribed(1.0)
        out.append((s, deliveries))
    return out


def _state(session, deliveries) -> dict:
    return {"malformed": session.malformed, "deliveries": deliveries,
            "subs": {sid: (st.received, st.epoch_received, dict(st.max_n), st.last_seq, _columns(st.log))
                     for sid, st in session.subs.items()}}


def test_dispatch_change_compiled_does_what_the_python_does():
    from kalamclient.events import Change
    from loadtest.run import listening
    if listening.speedups is None:
        pytest.skip("loadtest.run._speedups was not built")
    (compiled, got), (python, want) = _sessions()
    handed = []
    reference = compiled._dispatch

    def counted(ev):
        handed.append(ev)
        return reference(ev)

    compiled._dispatch = counted   # what the compiled one hands to the Python
    rng = random.Random(20261209)
    for i in range(5000):
        ev = Change(rng.choice(["events", "events", "chat", "nope"]),
                    rng.choice(["insert", "update", "delete"] * 6 + ["weird", None]), _row(rng),
                    rng.choice([None, _row(rng), _row(rng)]),
                    rng.choice([None, "12", -5, 2**64] + [rng.randrange(1, 2**62) for _ in range(16)]),
                    rng.choice([1_750_000_000.125, 1_750_000_001.5, 7]))
        assert _outcome(listening.speedups.dispatch_change, compiled, ev) == _outcome(python._dispatch, ev), i
    assert _state(compiled, got) == _state(python, want)
    assert 200 < len(handed) < 2500, len(handed)
    assert len(got) > 1500 and python.malformed > 100 and all(st.received > 500 for st in python.subs.values())
    # push mode hands changes to the compiled branch, except in a session whose class has its own _dispatch
    assert compiled._change_handler().func is listening.speedups.dispatch_change

    class Own(listening.ListenerSession):
        def _dispatch(self, ev):
            return super()._dispatch(ev)

    own = Own(None, compiled.account, [st.spec for st in compiled.subs.values()], batch_size=0)
    assert own._change_handler() == own._dispatch


def test_the_compiled_branch_reads_and_writes_through_a_class_changed_under_it():
    """csrc/slots.h reads a slot in place only while the object's class is the one it saw, unchanged: a
    subclass whose last_seq is a property, and that class changed mid-run, are honoured as Python honours them."""
    from kalamclient.events import Change
    from loadtest.run import listening
    if listening.speedups is None:
        pytest.skip("loadtest.run._speedups was not built")
    base = listening.SubscriptionState.last_seq
    watched = []
    for (session, _), who in zip(_sessions(), ("compiled", "python")):
        def setter(st, v, who=who):
            watched.append((who, v))
            base.__set__(st, v)

        cls = type("Watched", (listening.SubscriptionState,),
                   {"__slots__": (), "last_seq": property(base.__get__, setter)})
        for st in session.subs.values():
            st.__class__ = cls
        watched.append((who, session, cls))
    (_, compiled, c_cls), (_, python, p_cls) = watched[0], watched[1]
    del watched[:]
    rng = random.Random(20261210)
    for i in range(400):
        if i == 200:   # the class changes: received becomes a property too (the cached slot must not be used)
            for cls in (c_cls, p_cls):
                cls.received = property(lambda st: -1, lambda st, v: None)
        ev = Change("events", rng.choice(["insert", "update"]), {"id": "w1:1", "writer": "w1", "n": str(i),
                    "body": "x"}, None, (i + 1) << 22, 1_750_000_000.0 + i)
        listening.speedups.dispatch_change(compiled, ev)
        python._dispatch(ev)
    assert [v for who, v in watched if who == "compiled"] == [v for who, v in watched if who == "python"]
    assert len(watched) > 100
    assert _state(compiled, []) == _state(python, [])
    assert compiled.subs["events"].received == -1 and compiled.subs["events"].epoch_received == 400
    slot = listening.SubscriptionState.received   # the slot under the property: written only before the change
    assert slot.__get__(compiled.subs["events"]) == slot.__get__(python.subs["events"]) == 200
