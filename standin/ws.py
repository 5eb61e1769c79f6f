"""WebSocket endpoint /v1/ws (protocol §5)."""
from __future__ import annotations

import asyncio
import socket
import logging
import sqlite3
import time
from collections import deque

import orjson
import sqlglot
from aiohttp import WSMsgType, web
from sqlglot import exp

from .live import MAX_BUFFERED, MAX_SUBS_PER_CONN, DEFAULT_BATCH, Conn, Sub, compile_filter
from .sqlexec import Ctx, Session, SqlError, check_read, lower_columns, qi
from .types import encode

log = logging.getLogger("standin.ws")

CLIENT_TYPES = ("authenticate", "subscribe", "next_batch", "unsubscribe", "ping")


class BadMessage(Exception):
    pass


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _req_str(obj, key):
    if key not in obj:
        raise BadMessage(f"missing field `{key}`")
    v = obj[key]
    if not isinstance(v, str):
        raise BadMessage(f"invalid type: {_tname(v)}, expected a string")
    return v


def _tname(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean `{str(v).lower()}`"
    if isinstance(v, int):
        return f"integer `{v}`"
    if isinstance(v, float):
        return f"floating point `{v}`"
    if isinstance(v, str):
        return f'string "{v[:40]}"'
    if isinstance(v, list):
        return "sequence"
    return "map"


def _opt_uint(obj, key):
    v = obj.get(key)
    if v is None:
        return None
    if not _is_int(v) or v < 0:
        raise BadMessage(f"invalid type: {_tname(v)}, expected u64")
    return v


def validate(obj) -> dict:
    """Mimics serde deserialisation of ClientMessage; raises BadMessage."""
    if not isinstance(obj, dict):
        raise BadMessage(f"invalid type: {_tname(obj)}, expected internally tagged enum ClientMessage")
    if "type" not in obj:
        raise BadMessage("missing field `type`")
    t = obj["type"]
    if not isinstance(t, str) or t not in CLIENT_TYPES:
        raise BadMessage(f"unknown variant `{t}`, expected one of `authenticate`, `subscribe`, `next_batch`, "
                         f"`unsubscribe`, `ping`")
    if t == "authenticate":
        m = _req_str(obj, "method")
        if m != "jwt":
            raise BadMessage(f"unknown variant `{m}`, expected `jwt`")
        _req_str(obj, "token")
        if "protocol" not in obj:
            raise BadMessage("missing field `protocol`")
        p = obj["protocol"]
        if not isinstance(p, dict):
            raise BadMessage(f"invalid type: {_tname(p)}, expected struct ProtocolOptions")
        s = _req_str(p, "serialization")
        c = _req_str(p, "compression")
        if s not in ("json", "msgpack"):
            raise BadMessage(f"unknown variant `{s}`, expected `json` or `msgpack`")
        if c not in ("gzip", "none"):
            raise BadMessage(f"unknown variant `{c}`, expected `gzip` or `none`")
    elif t == "subscribe":
        if "subscription" not in obj:
            raise BadMessage("missing field `subscription`")
        s = obj["subscription"]
        if not isinstance(s, dict):
            raise BadMessage(f"invalid type: {_tname(s)}, expected struct SubscriptionRequest")
        _req_str(s, "id")
        _req_str(s, "sql")
        o = s.get("options")
        if o is not None:
            if not isinstance(o, dict):
                raise BadMessage(f"invalid type: {_tname(o)}, expected struct SubscriptionOptions")
            _opt_uint(o, "batch_size")
            _opt_uint(o, "last_rows")
            if "from" in o and "from_seq_id" in o:
                raise BadMessage("duplicate field `from`")
            for k in ("from", "from_seq_id"):
                v = o.get(k)
                if v is not None and not _is_int(v):
                    raise BadMessage(f"invalid type: {_tname(v)}, expected i64")
    elif t == "next_batch":
        _req_str(obj, "subscription_id")
        v = obj.get("last_seq_id")
        if v is not None and not _is_int(v):
            raise BadMessage(f"invalid type: {_tname(v)}, expected i64")
    elif t == "unsubscribe":
        _req_str(obj, "subscription_id")
    return obj


def err(conn: Conn, sid: str, code: str, message: str):
    conn.send_ctrl({"type": "error", "subscription_id": sid, "code": code, "message": message})


def _truncate_reason(s: str) -> str:
    b = s.encode()[:123]
    return b.decode(errors="ignore")


class WsHandler:
    def __init__(self, state):
        self.st = state

    async def handle(self, request: web.Request):
        st = self.st
        live = st.live
        ip = st.client_ip(request)
        if len(live.conns) >= st.settings.max_connections:
            return web.Response(status=503, text="Server shutting down")
        if st.shutting_down:
            return web.Response(status=503, text="Server is shutting down")
        ws = web.WebSocketResponse(autoping=False, max_msg_size=0, timeout=2.0, compress=False, autoclose=True)
        await ws.prepare(request)
        if st.settings.ws_send_buffer_bytes:
            sock = request.transport.get_extra_info("socket") if request.transport else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, st.settings.ws_send_buffer_bytes)
        q = request.query_string.lower()
        compress = not any(p.strip() == "compress=false" for p in q.split("&"))
        conn = Conn(live, ws, compress, ip)
        live.add_conn(conn)
        wtask = asyncio.ensure_future(conn.writer())
        authz = request.headers.get("Authorization")
        if authz is not None and authz.startswith("Bearer "):
            conn.auth_received = True
            proto = {"serialization": request.query.get("serialization", "json"),
                     "compression": request.query.get("compression", "gzip")}
            if proto["serialization"] not in ("json", "msgpack"):
                proto["serialization"] = "json"
            if proto["compression"] not in ("gzip", "none"):
                proto["compression"] = "gzip"
            self.authenticate(conn, authz[7:].strip(), proto)
        max_size = st.settings.max_ws_message_size
        try:
            while True:
                msg = await ws.receive()
                t = msg.type
                if t is WSMsgType.TEXT:
                    conn.last_inbound = time.monotonic()
                    conn.last_ping_wall = time.time()
                    if conn.closing:
                        continue
                    if not conn.bucket.take():
                        err(conn, "rate_limit", "RATE_LIMIT_EXCEEDED", "Too many messages")
                        continue
                    if len(msg.data) > max_size:
                        err(conn, "protocol", "MESSAGE_TOO_LARGE",
                            f"Message too large: {len(msg.data)} bytes (max {max_size})")
                        continue
                    self.on_text(conn, msg.data)
                elif t is WSMsgType.PING:
                    conn.last_inbound = time.monotonic()
                    conn.last_ping_wall = time.time()
                    await ws.pong(msg.data)
                elif t is WSMsgType.PONG:
                    conn.last_inbound = time.monotonic()
                    conn.last_ping_wall = time.time()
                elif t is WSMsgType.BINARY:
                    conn.last_inbound = time.monotonic()
                    conn.last_ping_wall = time.time()
                    if not conn.closing:
                        err(conn, "protocol", "UNSUPPORTED_DATA", "Binary not supported")
                else:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            live.remove_conn(conn)
            conn.wake.set()
            if not wtask.done():
                try:
                    await asyncio.wait_for(asyncio.shield(wtask), 3.0)
                except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    wtask.cancel()
            if not ws.closed:
                try:
                    await ws.close()
                except Exception:
                    pass
        return ws

    # ------------------------------------------------------------------ auth
    def authenticate(self, conn: Conn, token: str, proto: dict):
        st = self.st
        if not st.auth_buckets.take(conn.ip):
            conn.send_ctrl({"type": "auth_error", "message": "Too many authentication attempts. Please retry shortly."})
            conn.close(1008, "Authentication failed")
            return
        try:
            uid, role = st.validate_access(token)
        except Exception:
            conn.send_ctrl({"type": "auth_error", "message": "Invalid credentials"})
            conn.close(1008, "Authentication failed")
            return
        conn.user_id, conn.role = uid, role
        conn.authenticated = True
        conn.protocol = proto
        conn.send_ctrl({"type": "auth_success", "user": uid, "role": role, "protocol": proto})

    # ------------------------------------------------------------------ messages
    def on_text(self, conn: Conn, data: str):
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as ex:
            conn.close(1011, _truncate_reason(f"Invalid message: {ex}"))
            return
        try:
            validate(obj)
        except BadMessage as ex:
            conn.close(1011, _truncate_reason(f"Invalid message: {ex}"))
            return
        t = obj["type"]
        if t == "ping":
            return
        if t == "authenticate":
            if conn.authenticated:
                conn.send_ctrl({"type": "auth_success", "user": conn.user_id, "role": conn.role,
                                "protocol": conn.protocol})
                return
            conn.auth_received = True
            self.authenticate(conn, obj["token"], obj["protocol"])
            return
        if t == "subscribe":
            if not conn.authenticated:
                err(conn, "subscribe", "AUTH_REQUIRED", "Authentication required before subscribing")
                return
            self.subscribe(conn, obj["subscription"])
            return
        if not conn.authenticated:
            return  # next_batch / unsubscribe ignored before auth
        if t == "next_batch":
            self.next_batch(conn, obj["subscription_id"], obj.get("last_seq_id"))
        elif t == "unsubscribe":
            live = self.st.live
            live.remove_sub(conn, obj["subscription_id"])
            live.user_counts[conn.user_id] = max(0, live.user_counts.get(conn.user_id, 0) - 1)

    # ------------------------------------------------------------------ subscribe
    def subscribe(self, conn: Conn, s: dict):
        st = self.st
        live = st.live
        sid = s["id"]
        if not sid.strip():
            err(conn, "invalid_subscription", "INVALID_SUBSCRIPTION_ID", "Subscription ID cannot be empty")
            return
        if live.user_counts.get(conn.user_id, 0) >= st.settings.max_subscriptions_per_user:
            err(conn, sid, "SUBSCRIPTION_LIMIT_EXCEEDED", "Maximum subscriptions reached")
            return
        if sid not in conn.subs and len(conn.subs) >= MAX_SUBS_PER_CONN:
            err(conn, sid, "UNSUPPORTED",
                f"Invalid operation: Maximum subscriptions ({MAX_SUBS_PER_CONN}) per connection exceeded")
            return
        options = s.get("options")
        if options is not None:
            options = dict(options)
            if "from_seq_id" in options:
                options["from"] = options.pop("from_seq_id")
            bs = options.get("batch_size")
            bs = DEFAULT_BATCH if not bs else bs
            options["_bs"] = bs
            lr = options.get("last_rows")
            if lr is not None and lr > bs:
                err(conn, sid, "UNSUPPORTED",
                    f"last_rows ({lr}) cannot exceed batch_size ({bs}); increase batch_size or lower last_rows")
                return
        sql = s["sql"]
        try:
            plan = self.plan_subscription(sql)
        except SqlError as ex:
            err(conn, sid, "INVALID_SQL", f"Invalid SQL: {ex.message}")
            return
        ns, name, where, proj = plan
        if ns == "system":
            if conn.role not in ("dba", "system"):
                err(conn, sid, "UNAUTHORIZED", f"Permission denied: system.{name} requires DBA or System role")
            else:
                err(conn, sid, "SUBSCRIPTION_FAILED", "Live queries on system views are not supported by the stand-in")
            return
        t = st.store.tables.get((ns, name))
        if t is None:
            err(conn, sid, "NOT_FOUND", f"Not found: Table not found: {ns}.{name}")
            return
        ctx = Ctx(Session(conn.user_id, conn.role), {}, ns)
        try:
            check_read(t, ctx, user_error=lambda m: SqlError("UNAUTHORIZED", m))
        except SqlError as ex:
            err(conn, sid, "UNAUTHORIZED", f"Permission denied: {ex.message}")
            return
        if proj is not None:
            for c in proj:
                if c not in t.colmap:
                    err(conn, sid, "INVALID_SQL", f"Invalid SQL: Schema error: No field named {c}")
                    return
        owner = conn.user_id if t.kind in ("USER", "STREAM") else ""
        colcats = {c.name: c.cat for c in t.all_cols}
        flt = compile_filter(where, colcats, conn.user_id) if where is not None else None
        alias = name
        where_sql = lower_columns(where.copy()).sql(dialect="sqlite") if where is not None else "1"
        snap_where = (f"FROM {qi(t.phys)} AS {qi(alias)} WHERE _deleted = 0 AND _owner = :__owner AND "
                      f"({where_sql})")
        # replace silently (per-user counter still increments)
        if sid in conn.subs:
            live.remove_sub(conn, sid)
        sub = Sub(conn, sid, t, sql, options, proj, flt, owner, snap_where)
        conn.subs[sid] = sub
        live.user_counts[conn.user_id] = live.user_counts.get(conn.user_id, 0) + 1
        if proj is None:
            schema_cols = t.all_cols
        else:
            schema_cols = [t.colmap[c] for c in proj]
        schema = []
        for i, c in enumerate(schema_cols):
            f = {"name": c.name, "data_type": c.dtype, "index": i}
            fl = c.flags()
            if fl:
                f["flags"] = fl
            schema.append(f)
        if options is None:
            live._index(sub)
            conn.send_ctrl({"type": "subscription_ack", "subscription_id": sid, "total_rows": 0,
                            "batch_control": {"batch_num": 0, "has_more": False, "status": "ready",
                                              "last_seq_id": None},
                            "schema": schema})
            return
        # snapshot then live: index first, buffer while loading
        sub.loading = True
        sub.buffer = deque(maxlen=MAX_BUFFERED)
        sub.batch_size = options["_bs"]
        sub.from_ = options.get("from")
        f = st.faults
        if sub.from_ is not None and f.left["handover_reorder"] and f.in_scope(conn.user_id, sid) \
                and f.take("handover_reorder"):
            live.arm_handover(sub)
        live._index(sub)
        try:
            params = {"__owner": owner, "__from": sub.from_ if sub.from_ is not None else -(1 << 63)}
            b = st.store.db.execute(f"SELECT MAX(_seq) {snap_where} AND _seq > :__from", params).fetchone()[0]
            sub.boundary = b or 0
            # precedence: from -> resume (batched); else last_rows -> newest N; else batched snapshot
            rows, has_more = self.fetch_batch(sub, None, options.get("last_rows") if sub.from_ is None else None)
        except sqlite3.Error as ex:
            live.remove_sub(conn, sid)
            live.user_counts[conn.user_id] = max(0, live.user_counts.get(conn.user_id, 0) - 1)
            err(conn, sid, "SUBSCRIPTION_FAILED", f"Initial data fetch failed: {ex}")
            return
        bc = self.batch_control(sub, rows, has_more)
        conn.send_ctrl({"type": "subscription_ack", "subscription_id": sid, "total_rows": 0, "batch_control": bc,
                        "schema": schema})
        conn.send_ctrl({"type": "initial_data_batch", "subscription_id": sid, "rows": rows, "batch_control": bc})
        if not has_more:
            live.finish_loading(sub)

    def batch_control(self, sub: Sub, rows, has_more):
        if has_more:
            status = "loading" if sub.batch_num == 0 else "loading_batch"
        else:
            status = "ready"
        last = int(rows[-1]["_seq"]) if rows else None
        return {"batch_num": sub.batch_num, "has_more": has_more, "status": status, "last_seq_id": last}

    def fetch_batch(self, sub: Sub, after, last_rows=None):
        st = self.st
        t = sub.table
        names = [c.name for c in t.all_cols] if sub.proj is None else (
            list(sub.proj) + ([] if "_seq" in sub.proj else ["_seq"]))
        cats = [t.colmap[n].cat for n in names]
        cols_sql = ", ".join(qi(n) for n in names)
        cap = st.settings.max_query_limit
        params = {"__owner": sub.owner, "__b": sub.boundary}
        if last_rows is not None:
            params["__from"] = sub.from_ if sub.from_ is not None else -(1 << 63)
            params["__lim"] = min(last_rows, cap)
            raw = st.store.db.execute(f"SELECT {cols_sql} {sub.snap_where} AND _seq > :__from AND _seq <= :__b "
                                      f"ORDER BY _seq DESC LIMIT :__lim", params).fetchall()
            raw.reverse()
            has_more = False
        else:
            if after is None:
                after = sub.from_ if sub.from_ is not None else -(1 << 63)
            params["__after"] = after
            params["__lim"] = min(sub.batch_size + 1, cap)  # the §6.1 cap, reproduced
            raw = st.store.db.execute(f"SELECT {cols_sql} {sub.snap_where} AND _seq > :__after AND _seq <= :__b "
                                      f"ORDER BY _seq LIMIT :__lim", params).fetchall()
            has_more = len(raw) > sub.batch_size
            if has_more:
                raw = raw[:sub.batch_size]
        rows = [{n: encode(c, v) if c != "bool" else (None if v is None else bool(v))
                 for n, c, v in zip(names, cats, r)} for r in raw]
        return rows, has_more

    def next_batch(self, conn: Conn, sid: str, last_seq_id):
        sub = conn.subs.get(sid)
        if sub is None or not sub.loading:
            err(conn, sid, "BATCH_FETCH_FAILED",
                f"Batch fetch failed: no initial load in progress for subscription '{sid}'")
            return
        sub.batch_num += 1
        try:
            rows, has_more = self.fetch_batch(sub, last_seq_id)
        except sqlite3.Error as ex:
            err(conn, sid, "BATCH_FETCH_FAILED", f"Batch fetch failed: {ex}")
            return
        bc = self.batch_control(sub, rows, has_more)
        conn.send_ctrl({"type": "initial_data_batch", "subscription_id": sid, "rows": rows, "batch_control": bc})
        if not has_more:
            self.st.live.finish_loading(sub)

    _plan_cache: dict = {}

    def plan_subscription(self, sql: str):
        c = self._plan_cache.get(sql)
        if c is not None:
            return c
        try:
            ast = sqlglot.parse_one(sql)
        except Exception as ex:
            raise SqlError("INVALID_SQL", str(ex).splitlines()[0][:200]) from None
        if not isinstance(ast, exp.Select):
            raise SqlError("INVALID_SQL", "only SELECT is supported for live queries")
        for k in ("with", "with_", "order", "limit", "distinct", "joins", "group", "having", "offset"):
            if ast.args.get(k):
                raise SqlError("INVALID_SQL", f"{k.rstrip('_').upper()} is not supported in live queries")
        tables = list(ast.find_all(exp.Table))
        if len(tables) != 1:
            raise SqlError("INVALID_SQL", "live queries must select from exactly one table")
        tbl = tables[0]
        db = tbl.args.get("db")
        if not isinstance(db, exp.Identifier):
            raise SqlError("INVALID_SQL", "table must be written as namespace.table")
        ns = db.this if db.quoted else db.this.lower()
        name = tbl.this.this if tbl.this.quoted else str(tbl.this.this).lower()
        proj = None
        exprs = ast.expressions
        if not (len(exprs) == 1 and isinstance(exprs[0], exp.Star)):
            proj = []
            for e in exprs:
                if isinstance(e, exp.Column) and isinstance(e.this, exp.Identifier):
                    proj.append(e.this.this if e.this.quoted else e.this.this.lower())
                else:
                    raise SqlError("INVALID_SQL", f"unsupported projection {e.sql()}")
        where = ast.args.get("where")
        plan = (ns, name, where.this if where is not None else None, proj)
        if len(self._plan_cache) > 1000:
            self._plan_cache.clear()
        self._plan_cache[sql] = plan
        return plan
