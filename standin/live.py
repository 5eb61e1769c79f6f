"""Live queries: connections, subscriptions, snapshot/live boundary, change fan-out, faults (§5)."""
from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
import zlib
from collections import deque

import orjson
from aiohttp import WSMsgType

from .auth import TokenBucket
from .duetimer import DueTimer
from .storage import seq_time_ms
from .types import encode

log = logging.getLogger("standin.live")
# KalamDB's own target for the full-channel warning (kdb-live notification.rs:try_deliver), so that a log
# check written against KalamDB's server.log reads the stand-in's the same way
notif_log = logging.getLogger("kalamdb_live::notification")

CHANGE, CTRL, CLOSE = 0, 1, 2
QUEUE_CAP = 128  # KalamDB's NOTIFICATION_CHANNEL_CAPACITY; the default of [websocket] notification_channel_capacity
MAX_BUFFERED = 1024
MAX_SUBS_PER_CONN = 100
DEFAULT_BATCH = 1000
REORDER_FLUSH_S = 0.2

_PREFIX = b'{"type":"change","subscription_id":"'
_NEEDS_ENC = ("int64", "bool", "bytes")


def esc_id(s: str) -> bytes:
    return s.replace("\\", "\\\\").replace('"', '\\"').encode()


def dumps(obj) -> bytes:
    return orjson.dumps(obj)


class FilterUnsupported(Exception):
    pass


# ------------------------------------------------------------------------------------ live filter
def compile_filter(where, colcats: dict, current_user: str):
    """sqlglot WHERE -> predicate(row) using only = != <> < > <= >= AND OR NOT LIKE ILIKE () col literal.

    Anything else compiles to a predicate that raises, so the change is silently skipped (§5.4)."""
    from sqlglot import exp

    from .sqlexec import func_name, literal_value

    def operand(e):
        if isinstance(e, exp.Paren):
            return operand(e.this)
        if isinstance(e, exp.Column) and not e.table or isinstance(e, exp.Column):
            ident = e.this
            name = ident.this if getattr(ident, "quoted", False) else str(ident.this).lower()
            return ("col", name)
        if func_name(e) == "CURRENT_USER":
            return ("lit", current_user)
        try:
            return ("lit", literal_value(e))
        except ValueError:
            return None

    def getter(op, other):
        kind, v = op
        if kind == "col":
            return lambda r, n=v: r.get(n)
        # coerce literal to the other side's column type
        if other and other[0] == "col":
            cat = colcats.get(other[1])
            if cat in ("int64", "int", "ts", "date") and isinstance(v, str):
                try:
                    v = int(v)
                except ValueError:
                    pass
            elif cat == "float" and isinstance(v, str):
                try:
                    v = float(v)
                except ValueError:
                    pass
            elif cat == "bool" and isinstance(v, int):
                v = bool(v)
            elif cat == "text" and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = str(v)
        return lambda r, v=v: v

    def bad(r):
        raise FilterUnsupported()

    cmp_ops = {
        exp.EQ: lambda a, b: a == b, exp.NEQ: lambda a, b: a != b, exp.LT: lambda a, b: a < b,
        exp.GT: lambda a, b: a > b, exp.LTE: lambda a, b: a <= b, exp.GTE: lambda a, b: a >= b,
    }

    def like_re(pat: str, ci: bool):
        rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pat)
        return re.compile("^" + rx + "$", re.S | (re.I if ci else 0))

    def comp(e):
        if isinstance(e, exp.Paren):
            return comp(e.this)
        if isinstance(e, exp.And):
            a, b = comp(e.this), comp(e.expression)
            return lambda r: a(r) and b(r)
        if isinstance(e, exp.Or):
            a, b = comp(e.this), comp(e.expression)
            return lambda r: a(r) or b(r)
        if isinstance(e, exp.Not):
            a = comp(e.this)
            return lambda r: not a(r)
        for cls, fn in cmp_ops.items():
            if type(e) is cls:
                lo, ro = operand(e.this), operand(e.expression)
                if lo is None or ro is None:
                    return bad
                lg, rg = getter(lo, ro), getter(ro, lo)

                def f(r, lg=lg, rg=rg, fn=fn):
                    a, b = lg(r), rg(r)
                    if a is None or b is None:
                        return False
                    try:
                        return fn(a, b)
                    except TypeError:
                        raise FilterUnsupported() from None
                return f
        if isinstance(e, (exp.Like, exp.ILike)):
            lo, ro = operand(e.this), operand(e.expression)
            if lo is None or ro is None or ro[0] != "lit" or not isinstance(ro[1], str):
                return bad
            rx = like_re(ro[1], isinstance(e, exp.ILike))
            lg = getter(lo, None)

            def f(r, lg=lg, rx=rx):
                a = lg(r)
                if a is None:
                    return False
                return rx.match(str(a)) is not None
            return f
        if isinstance(e, exp.Boolean):
            return lambda r, v=bool(e.this): v
        return bad

    return comp(where)


# ------------------------------------------------------------------------------------ change
class Change:
    __slots__ = ("t", "kind", "new", "old", "owner", "changed", "seq", "cache")

    def __init__(self, t, kind, new, old, owner, changed, seq):
        self.t, self.kind, self.new, self.old, self.owner, self.changed, self.seq = t, kind, new, old, owner, changed, seq
        self.cache = {}

    def filter_row(self):
        return self.new if self.new is not None else self.old

    def payload(self, proj):
        """dict form of the change (without type/subscription_id)."""
        t = self.t
        cols = t.columns
        if proj is not None:
            pset = set(proj)
        kind = self.kind
        if kind == "insert":
            r = self.new
            d = {}
            if proj is None:
                for c in cols:
                    v = r[c.name]
                    d[c.name] = encode(c.cat, v) if c.cat in _NEEDS_ENC else v
                d["_seq"] = str(r["_seq"])
                if t.kind != "STREAM":
                    d["_deleted"] = False
            else:
                for name in proj:
                    c = t.colmap.get(name)
                    if c is not None:
                        d[name] = encode(c.cat, r.get(name))
                d["_seq"] = str(r["_seq"])
            return {"change_type": "insert", "rows": [d]}
        if kind == "update":
            new, old = self.new, self.old
            pk = t.pk
            rd = {"_seq": str(new["_seq"])}
            od = {"_seq": str(old["_seq"])}
            if pk is not None:
                rd[pk.name] = encode(pk.cat, new[pk.name])
                od[pk.name] = encode(pk.cat, old[pk.name])
            for c in cols:
                if c is pk or (proj is not None and c.name not in pset):
                    continue
                v = new.get(c.name)
                if v is not None:
                    rd[c.name] = encode(c.cat, v)
            for name in self.changed or ():
                if proj is not None and name not in pset:
                    continue
                c = t.colmap[name]
                od[name] = encode(c.cat, old.get(name))
            return {"change_type": "update", "rows": [rd], "old_values": [od]}
        # delete
        if t.kind == "STREAM":
            return {"change_type": "delete", "old_values": [{"row_id": f"{self.owner}:{self.old['_seq']}"}]}
        r = self.new
        d = {}
        for c in cols:
            if proj is not None and c.name not in pset:
                continue
            d[c.name] = encode(c.cat, r.get(c.name))
        d["_seq"] = str(r["_seq"])
        d["_deleted"] = True
        return {"change_type": "delete", "old_values": [d]}

    def suffix(self, proj, proj_key):
        s = self.cache.get(proj_key)
        if s is None:
            body = dumps(self.payload(proj))  # {"change_type":...}
            s = b'",' + body[1:]
            self.cache[proj_key] = s
        return s

    def message(self, sub) -> bytes:
        return _PREFIX + sub.id_esc + self.suffix(sub.proj, sub.proj_key)

    def corrupted_message(self, sub, rng) -> bytes:
        p = self.payload(sub.proj)
        row = (p.get("rows") or p.get("old_values"))[0]
        pk = self.t.pk.name if self.t.pk else None
        cands = [k for k in row if k not in ("_seq", "_deleted", "row_id", pk, "writer", "n")]
        if not cands:
            cands = [k for k in row if k not in ("_seq", "_deleted", "row_id", pk)]
        if cands:
            k = cands[rng.randrange(len(cands))]
            v = row[k]
            if isinstance(v, bool):
                row[k] = not v
            elif isinstance(v, (int, float)):
                row[k] = v + 1
            elif isinstance(v, str):
                if v.lstrip("-").isdigit():
                    row[k] = str(int(v) + 1)
                else:
                    row[k] = v + "#corrupt"
            else:
                row[k] = "#corrupt"
        return _PREFIX + sub.id_esc + b'",' + dumps(p)[1:]


_DELAY_GROUP_S = 50e-6  # held changes due this close together leave together

# ------------------------------------------------------------------------------------ connection
class Conn:
    def __init__(self, manager: "LiveManager", ws, compress: bool, ip: str):
        self.m = manager
        self.id = uuid.uuid4().hex
        self.ws = ws
        self.compress = compress
        self.ip = ip
        self.out: deque = deque()
        self.change_count = 0
        self.wake = asyncio.Event()
        self.subs: dict[str, Sub] = {}
        self.user_id: str | None = None
        self.role: str | None = None
        self.authenticated = False
        self.auth_received = False
        self.connected_at = time.monotonic()
        self.last_inbound = self.connected_at
        self.last_ping_wall = time.time()
        self.closing = False
        self.sent_changes = 0
        self.bucket = TokenBucket(manager.settings.max_messages_per_sec)
        self.protocol = {"serialization": "json", "compression": "gzip"}

    def send_ctrl(self, obj):
        if self.closing:
            return
        self.out.append((CTRL, obj if isinstance(obj, bytes) else dumps(obj)))
        self.wake.set()

    def close(self, code: int, reason: str):
        if self.closing:
            return
        self.out.append((CLOSE, (code, reason)))
        self.closing = True
        self.wake.set()

    async def writer(self):
        ws, out, m = self.ws, self.out, self.m
        send = ws.send_frame
        TEXT, BINARY = WSMsgType.TEXT, WSMsgType.BINARY
        try:
            while True:
                if not out:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                kind, data = out.popleft()
                if kind == CLOSE:
                    await ws.close(code=data[0], message=data[1].encode())
                    return
                if kind == CHANGE:
                    self.change_count -= 1
                if self.compress and len(data) >= 512:
                    z = zlib.compress(data, 1, 31)
                    if len(z) < len(data):
                        await send(z, BINARY)
                    else:
                        await send(data, TEXT)
                else:
                    await send(data, TEXT)
                if kind == CHANGE:
                    m.sent_changes += 1
                    self.sent_changes += 1
                    de = m.faults.disconnect_every
                    if de and self.sent_changes % de == 0 and m.faults.conn_in_scope(self.user_id, self.subs):
                        self.closing = True
                        await ws.close(code=1011, message=b"standin fault: disconnect_every")
                        return
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        except Exception:  # pragma: no cover
            log.exception("writer failed")
        finally:
            self.closing = True


class Sub:
    __slots__ = ("conn", "id", "id_esc", "user_id", "table", "sql", "options", "options_json", "proj", "proj_key",
                 "filter", "created_at", "last_update", "changes", "loading", "boundary", "buffer", "from_",
                 "batch_size", "batch_num", "reorder_buf", "reorder_timer", "delay_q", "delay_timer", "live_id",
                 "active", "owner", "snap_where", "key", "killed", "hold", "hold_phase", "hold_timer")

    def __init__(self, conn, sid, table, sql, options, proj, flt, owner, snap_where):
        self.conn = conn
        self.id = sid
        self.id_esc = esc_id(sid)
        self.user_id = conn.user_id
        self.table = table
        self.sql = sql
        self.options = options
        self.options_json = None
        if options is not None:
            o = {}
            for k in ("batch_size", "last_rows", "from"):
                if options.get(k) is not None:
                    o[k] = options[k]
            self.options_json = dumps(o).decode()
        self.proj = proj
        self.proj_key = None if proj is None else tuple(proj)
        self.filter = flt
        self.created_at = time.time()
        self.last_update = self.created_at
        self.changes = 0
        self.loading = False
        self.boundary = 0
        self.buffer = None
        self.from_ = None
        self.batch_size = DEFAULT_BATCH
        self.batch_num = 0
        self.reorder_buf = []
        self.reorder_timer = None
        self.delay_q = deque()
        self.delay_timer = None
        self.live_id = f"{conn.user_id}-{conn.id}-{sid}"
        self.active = True
        self.owner = owner
        self.snap_where = snap_where
        self.key = (table.ns, table.name, owner)
        self.killed = False
        # fault handover_reorder: the first live changes after a resume (None: not armed)
        self.hold = None
        self.hold_phase = 0
        self.hold_timer = None

    def live_row(self, skew: int, node_id: int = 1):
        t = self.table
        return (self.live_id, self.conn.id, self.id, t.ns, t.name, self.user_id, self.sql, self.options_json,
                "active", int(self.created_at * 1e6), int(self.last_update * 1e6), self.changes + skew, node_id,
                int(self.conn.last_ping_wall * 1e6))


# ------------------------------------------------------------------------------------ manager
class LiveManager:
    def __init__(self, settings, faults, store):
        self.settings = settings
        self.faults = faults
        self.store = store
        self.conns: dict[str, Conn] = {}
        self.index: dict[tuple, dict] = {}
        self.user_counts: dict[str, int] = {}
        self.zombies: list[Sub] = []
        # per-connection channel of change messages (KalamDB: bounded mpsc, try_send): beyond it a change
        # is dropped, logged, and not counted in system.live.changes
        self.cap = getattr(settings, "notification_channel_capacity", QUEUE_CAP)
        self.queue_drops = 0
        self.fault_drops = 0
        self.fault_duplicates = 0
        self.fault_corrupted = 0
        self.fault_cross_user = 0
        self.handover_swaps = 0
        self.sent_changes = 0
        # fault delay_ms: how late each held change left its due time (us; the newest 10,000 since faults
        # were last set), so that a latency benchmark can tell the stand-in's timer error from the client's
        self.delay_late_us: deque = deque(maxlen=10_000)
        self.peak_conns = 0
        self.peak_subs = 0
        self.loop = None
        self.due_timer = None

    # ----------------------------------------------------------- registry
    def add_conn(self, c: Conn):
        self.conns[c.id] = c
        self.peak_conns = max(self.peak_conns, len(self.conns))

    def remove_conn(self, c: Conn):
        self.conns.pop(c.id, None)
        c.closing = True
        for sub in list(c.subs.values()):
            self._unindex(sub)
            if c.user_id is not None:
                self.user_counts[c.user_id] = max(0, self.user_counts.get(c.user_id, 0) - 1)
        c.subs.clear()
        c.out.clear()
        c.change_count = 0

    def active_subs(self):
        n = sum(len(c.subs) for c in self.conns.values())
        return n

    def _index(self, sub: Sub):
        self.index.setdefault(sub.key, {})[(sub.conn.id, sub.id)] = sub
        self.peak_subs = max(self.peak_subs, self.active_subs())

    def _unindex(self, sub: Sub):
        d = self.index.get(sub.key)
        if d is not None:
            d.pop((sub.conn.id, sub.id), None)
            if not d:
                self.index.pop(sub.key, None)
        sub.active = False
        if sub.reorder_timer is not None:
            sub.reorder_timer.cancel()
            sub.reorder_timer = None
        if sub.delay_timer is not None:
            sub.delay_timer.cancel()
            sub.delay_timer = None
        if sub.hold_timer is not None:
            sub.hold_timer.cancel()
            sub.hold_timer = None
        sub.hold = None
        if self.faults.zombies:
            self.zombies.append(sub)

    def remove_sub(self, conn: Conn, sid: str):
        sub = conn.subs.pop(sid, None)
        if sub is not None:
            self._unindex(sub)
        return sub

    def kill(self, live_id: str) -> bool:
        for c in self.conns.values():
            for sub in c.subs.values():
                if sub.live_id == live_id:
                    self.remove_sub(c, sub.id)  # no message, per-user counter untouched
                    return True
        return False

    def drop_table(self, t):
        for key in [k for k in self.index if k[0] == t.ns and k[1] == t.name]:
            for sub in list(self.index[key].values()):
                sub.conn.subs.pop(sub.id, None)
                self._unindex(sub)

    def live_rows(self):
        f = self.faults
        skew = f.counter_skew

        def row(s):
            return s.live_row(skew if skew and f.in_scope(s.user_id, s.id) else 0)

        rows = [row(s) for c in self.conns.values() for s in c.subs.values()]
        if f.zombies:
            rows.extend(row(s) for s in self.zombies)
        else:
            self.zombies.clear()
        return rows

    # ----------------------------------------------------------- notifications
    def notify(self, t, kind, new, old, owner, changed=None):
        f = self.faults
        if f.leak_bytes:
            f.note_change()
        seq = new["_seq"] if new is not None else old["_seq"]
        ch = Change(t, kind, new, old, owner, changed, seq)
        if f.cross_user and t.kind == "USER" and f.rng.random() < f.cross_user:
            self._leak_to_other_user(t, owner, ch)
        subs = self.index.get((t.ns, t.name, owner))
        if not subs:
            return
        row = new if new is not None else old
        slow = f.delivery_active
        for sub in tuple(subs.values()):
            flt = sub.filter
            if flt is not None:
                try:
                    if not flt(row):
                        continue
                except Exception:
                    continue  # unsupported construct: change silently skipped
            if sub.loading:
                if seq > sub.boundary:
                    sub.buffer.append(ch)
                continue
            if slow:
                self.deliver_faulty(sub, ch)
            else:
                self.enqueue(sub, _PREFIX + sub.id_esc + ch.suffix(sub.proj, sub.proj_key))

    def _leak_to_other_user(self, t, owner, ch: Change):
        """Fault `cross_user`: a routing bug that sends a USER-table change to another user's live
        subscriptions on the table, ignoring their filter (what the security check must catch)."""
        others = sorted(k for k in self.index if k[0] == t.ns and k[1] == t.name and k[2] != owner)
        if not others:
            return
        for sub in tuple(self.index[self.faults.rng.choice(others)].values()):
            if not sub.loading:
                self.fault_cross_user += 1
                self.enqueue(sub, ch.message(sub))

    def enqueue(self, sub: Sub, msg: bytes):
        conn = sub.conn
        if conn.closing or not sub.active:
            return
        if sub.hold is not None:
            self._handover(sub, msg)
            return
        self._put(sub, msg)

    def _put(self, sub: Sub, msg: bytes):
        conn = sub.conn
        if conn.closing or not sub.active:
            return
        if conn.change_count >= self.cap:
            self.queue_drops += 1
            notif_log.warning("Notification channel full for subscription_id=%s, dropping notification", sub.id)
            return
        conn.out.append((CHANGE, msg))
        conn.change_count += 1
        sub.changes += 1
        sub.last_update = time.time()
        conn.wake.set()

    # ----------------------------------------------------------- fault handover_reorder
    def arm_handover(self, sub: Sub):
        """A resumed subscription (`from` given): its first two live changes will leave swapped."""
        sub.hold = []
        sub.hold_phase = 0

    def _handover(self, sub: Sub, msg: bytes):
        """KalamDB's snapshot-to-live race (protocol §5.4): a newer change is enqueued ahead of an older
        one. The first change is held; the second goes out, the first handover_gap_ms after it, and any
        later ones behind the first (so exactly one pair is out of order). A first change with no second
        within REORDER_FLUSH_S leaves alone, unswapped."""
        if sub.hold_phase == 0:
            sub.hold.append(msg)
            sub.hold_phase = 1
            sub.hold_timer = self.loop.call_later(REORDER_FLUSH_S, self._release_hold, sub)
        elif sub.hold_phase == 1:
            sub.hold_timer.cancel()
            sub.hold_timer = None
            self._put(sub, msg)
            self.handover_swaps += 1
            sub.hold_phase = 2
            gap = self.faults.handover_gap_ms
            if gap > 0:
                sub.hold_timer = self.loop.call_later(gap / 1000.0, self._release_hold, sub)
            else:
                self._release_hold(sub)
        else:
            sub.hold.append(msg)

    def _release_hold(self, sub: Sub):
        sub.hold_timer = None
        held, sub.hold = sub.hold or [], None
        for msg in held:
            self._put(sub, msg)

    def deliver_faulty(self, sub: Sub, ch: Change):
        f = self.faults
        if f.stall_sub is not None and sub.id == f.stall_sub and f.in_scope(sub.user_id, sub.id):
            if sub.conn.change_count < self.cap:
                sub.changes += 1  # counted as enqueued, never delivered
                sub.last_update = time.time()
            return
        tgt = f.targets(sub.user_id, sub.id)
        typed = f.type_ok(ch.kind)
        hit = tgt and typed
        rng = f.rng
        # an exact count is spent before the probability is drawn (so a seeded run draws the same
        # numbers with or without counts once they are spent)
        if hit and (f.take("drop_count") or (f.drop and rng.random() < f.drop)):
            self.fault_drops += 1
            return
        if hit and (f.take("corrupt_count") or (f.corrupt and rng.random() < f.corrupt)):
            msg = ch.corrupted_message(sub, rng)
            self.fault_corrupted += 1
        else:
            msg = ch.message(sub)
        copies = 2 if hit and (f.take("duplicate_count") or (f.duplicate and rng.random() < f.duplicate)) else 1
        self.fault_duplicates += copies - 1
        commit_mono = None
        for _ in range(copies):
            if (f.delay_ms or f.jitter_ms) and tgt:
                if commit_mono is None:
                    # due D after the commit stamp (the `_seq` time, whole ms), not after this routing
                    # step: a latency measured from commit then reads D plus the wire, and the stand-in's
                    # own time between stamp and routing is absorbed into D instead of added to it
                    commit_mono = time.monotonic() + seq_time_ms(ch.seq) / 1000.0 - time.time()
                d = f.delay_ms + (rng.uniform(0, f.jitter_ms) if f.jitter_ms else 0.0)
                at = commit_mono + d / 1000.0
                if sub.delay_q and sub.delay_q[-1][0] > at:
                    at = sub.delay_q[-1][0]  # order kept
                sub.delay_q.append((at, msg))
                if sub.delay_timer is None:
                    self._arm_delay(sub)
            else:
                self._stage2(sub, msg)

    def _arm_delay(self, sub: Sub):
        if self.due_timer is None:
            self.due_timer = DueTimer(self.loop)  # precise: asyncio's own timers fire up to 2 ms late
        sub.delay_timer = self.due_timer.call_at(sub.delay_q[0][0], self._release_delay, sub)

    def _release_delay(self, sub: Sub):
        sub.delay_timer = None
        now = time.monotonic()
        q = sub.delay_q
        late = self.delay_late_us
        while q and q[0][0] <= now + _DELAY_GROUP_S:
            at, msg = q.popleft()
            late.append(int((now - at) * 1e6))
            self._stage2(sub, msg)
        if q and sub.active:
            self._arm_delay(sub)

    def _stage2(self, sub: Sub, msg: bytes):
        if not sub.active:
            return
        f = self.faults
        n = f.reorder if f.scope is None or f.in_scope(sub.user_id, sub.id) else 0
        if n > 1 or sub.reorder_buf:
            sub.reorder_buf.append(msg)
            if len(sub.reorder_buf) >= max(n, 1):
                self._release_reorder(sub)
            elif sub.reorder_timer is None:
                sub.reorder_timer = self.loop.call_later(REORDER_FLUSH_S, self._release_reorder, sub)
            return
        self.enqueue(sub, msg)

    def _release_reorder(self, sub: Sub):
        if sub.reorder_timer is not None:
            sub.reorder_timer.cancel()
            sub.reorder_timer = None
        buf = sub.reorder_buf
        sub.reorder_buf = []
        self.faults.rng.shuffle(buf)
        for msg in buf:
            self.enqueue(sub, msg)

    def deliver(self, sub: Sub, ch: Change):
        if self.faults.delivery_active:
            self.deliver_faulty(sub, ch)
        else:
            self.enqueue(sub, ch.message(sub))

    def finish_loading(self, sub: Sub):
        sub.loading = False
        buf = sorted(sub.buffer or (), key=lambda c: c.seq)
        sub.buffer = None
        for ch in buf:
            if ch.seq > sub.boundary:
                self.deliver(sub, ch)

    # ----------------------------------------------------------- heartbeat
    async def heartbeat_loop(self):
        s = self.settings
        while True:
            await asyncio.sleep(s.heartbeat_interval_secs)
            now = time.monotonic()
            for c in list(self.conns.values()):
                if c.closing:
                    continue
                if not c.authenticated and not c.auth_received:
                    if now - c.connected_at > s.auth_timeout_secs:
                        c.send_ctrl({"type": "auth_error",
                                     "message": "Authentication timeout - no auth message received within 3 seconds"})
                        c.close(1008, "Authentication timeout")
                    continue
                if now - c.last_inbound > s.client_timeout_secs:
                    c.close(1000, "Heartbeat timeout")
