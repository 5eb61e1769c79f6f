"""aiohttp application: HTTP API, WebSocket, fault admin route, process entry point."""
from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

import orjson
import psutil
from aiohttp import web

from .auth import (ADMIN_ROLES, BucketMap, JwtCodec, TokenError, hash_password, validate_password,
                   verify_password)
from .config import SERVER_VERSION, load_settings
from .faults import FaultError, Faults, parse_cli_fault
from .live import LiveManager
from .sqlexec import PUBLIC_MESSAGES, Engine, Session, SqlError
from .storage import Store, rfc3339
from .ws import WsHandler

log = logging.getLogger("standin")

BUILD_DATE = "2026-05-04"
LOCKOUT_ATTEMPTS = 5
LOCKOUT_SECONDS = 15 * 60
JSON = "application/json"
WEAK_SECRETS = {"CHANGE_ME_IN_PRODUCTION", "kalamdb-dev-secret-key-change-in-production",
                "your-secret-key-at-least-32-chars-change-me-in-production", "test", "secret", "password"}


def _is_loopback(ip: str) -> bool:
    if not ip:
        return False
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


def jresp(obj, status=200, headers=None):
    return web.Response(body=orjson.dumps(obj), status=status, content_type=JSON, headers=headers)


def auth_err(kind: str, message: str, status: int):
    return jresp({"error": kind, "message": message}, status)


def _delay_late_figures(late_us) -> dict:
    """Fault delay_ms: how late held changes left their due time (ms; the newest 10,000)."""
    xs = sorted(late_us)
    if not xs:
        return {"standin_delay_released": 0}
    pick = lambda q: round(xs[min(len(xs) - 1, int(q * len(xs)))] / 1000.0, 3)  # noqa: E731
    return {"standin_delay_released": len(xs), "standin_delay_late_ms_p50": pick(0.5),
            "standin_delay_late_ms_p99": pick(0.99)}


class WriteQueue:
    """Fault write_capacity=R: a server that executes at most R write statements a second, one after the
    other (what a saturated write path does): a statement waits for its turn, so past R/s the answers
    and the notifications come later and later (a capacity the stepped load must find)."""

    def __init__(self):
        self.free_at = 0.0   # monotonic time the next turn is free

    async def turn(self, per_second: float) -> None:
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + 1.0 / per_second
        if start > now:
            await asyncio.sleep(start - now)


class State:
    def __init__(self, settings, store: Store, faults: Faults):
        self.settings = settings
        self.store = store
        self.faults = faults
        self.jwt = JwtCodec(settings.jwt_secret, settings.jwt_expiry_hours)
        self.live = LiveManager(settings, faults, store)
        self.engine = Engine(store, settings, faults, self.live, self.stats_rows)
        self.auth_buckets = BucketMap(settings.max_auth_requests_per_ip_per_sec)
        self.query_buckets = BucketMap(settings.max_queries_per_sec)
        self.write_queue = WriteQueue()
        self.token_cache: dict[str, dict] = {}
        self.started = time.time()
        self.proc = psutil.Process()
        self.proc.cpu_percent(None)
        self.shutting_down = False
        self.http_requests = 0

    # ------------------------------------------------------------ identity
    def client_ip(self, request: web.Request) -> str:
        peer = request.remote or ""
        if _is_loopback(peer):
            xff = request.headers.get("X-Forwarded-For")
            cands = [xff.split(",")[0].strip()] if xff else []
            xri = request.headers.get("X-Real-IP")
            if xri:
                cands.append(xri.strip())
            for c in cands:
                if c and not _is_loopback(c):
                    return c
        return peer

    def validate_access(self, token: str, token_type: str = "access"):
        claims = self.token_cache.get(token)
        if claims is None:
            claims = self.jwt.decode(token)
            if len(self.token_cache) > 20000:
                self.token_cache.clear()
            self.token_cache[token] = claims
        elif claims["exp"] + 60 < time.time():
            raise TokenError("TOKEN_EXPIRED", "Token expired")
        if claims.get("token_type", "access") != token_type:
            raise TokenError("INVALID_CREDENTIALS", "Invalid token type")
        uid = claims.get("sub")
        u = self.store.live_user(uid)
        if u is None:
            raise TokenError("INVALID_CREDENTIALS", "User not found")
        if claims.get("role") != u["role"]:
            raise TokenError("INVALID_CREDENTIALS", "Token role does not match user role")
        return uid, u["role"]

    def user_info(self, u):
        return {"id": u["id"], "role": u["role"], "email": u["email"], "created_at": u["created_at"],
                "updated_at": u["updated_at"]}

    def token_response(self, u):
        now = time.time()
        access, exp = self.jwt.issue(u["id"], u["role"], u["email"], "access", now)
        refresh, rexp = self.jwt.issue(u["id"], u["role"], u["email"], "refresh", now)
        body = {"user": self.user_info(u), "admin_ui_access": u["role"] in ADMIN_ROLES,
                "expires_at": rfc3339(exp), "access_token": access, "refresh_token": refresh,
                "refresh_expires_at": rfc3339(rexp)}
        resp = jresp(body)
        resp.set_cookie("kalamdb_auth", access, httponly=True, samesite="Strict", path="/",
                        max_age=int(exp - now))
        resp.set_cookie("kalamdb_refresh", refresh, httponly=True, samesite="Strict", path="/",
                        max_age=int(rexp - now))
        return resp

    # ------------------------------------------------------------ stats
    def stats_rows(self):
        p = self.proc
        mem = p.memory_info()
        vm = psutil.virtual_memory()
        live = self.live
        subs = live.active_subs()
        conns = len(live.conns)
        if self.faults.zombies:
            subs += len(live.zombies)
        m = {
            "memory_usage_bytes": mem.rss, "memory_usage_mb": round(mem.rss / 1048576, 2),
            "memory_usage_source": "psutil_rss", "memory_rss_bytes": mem.rss,
            "memory_rss_mb": round(mem.rss / 1048576, 2), "memory_virtual_bytes": mem.vms,
            "memory_virtual_mb": round(mem.vms / 1048576, 2),
            "cpu_usage_percent": round(p.cpu_percent(None), 2), "thread_count": p.num_threads(), "pid": p.pid,
            "system_total_memory_mb": vm.total // 1048576, "system_used_memory_mb": vm.used // 1048576,
            "server_uptime_seconds": int(time.time() - self.started),
            "active_connections": conns, "active_connections_peak": live.peak_conns,
            "max_connections_configured": self.settings.max_connections,
            "active_subscriptions": subs, "active_subscriptions_peak": max(live.peak_subs, subs),
            "total_live_queries": subs, "websocket_sessions": conns, "websocket_sessions_peak": live.peak_conns,
            "total_users": sum(1 for u in self.store.users.values() if not u["deleted"]),
            "total_namespaces": len(self.store.namespaces), "total_tables": len(self.store.tables),
            "jobs_running": 0, "jobs_queued": 0, "jobs_failed": 0,
            "schema_cache_size": len(self.store.tables), "plan_cache_size": len(self.engine.cache),
            "server_version": SERVER_VERSION, "node_id": 1, "cluster_mode": "standalone",
            "open_files": len(p.open_files()) if hasattr(p, "open_files") else 0,
            "standin_notifications_sent": live.sent_changes,
            "standin_notifications_dropped_queue_full": live.queue_drops,
            "standin_notifications_dropped_fault": live.fault_drops,
            "standin_notifications_duplicated_fault": live.fault_duplicates,
            "standin_notifications_corrupted_fault": live.fault_corrupted,
            "standin_notifications_cross_user_fault": live.fault_cross_user,
            **{f"standin_{k}_left": n for k, n in self.faults.left.items()},  # exact counts not yet spent
            "standin_handover_reordered": live.handover_swaps,
            **_delay_late_figures(live.delay_late_us),
            "standin_leaked_bytes": self.faults.leaked_bytes,
            "standin_dml_statements": self.engine.dml_count,
        }
        if self.faults.crash_due is not None:  # crash_at armed: seconds left
            m["standin_crash_in_s"] = round(max(0.0, self.faults.crash_due - time.monotonic()), 3)
        m.update(self.store.storage_figures())
        return [(k, str(v)) for k, v in m.items()]


# -------------------------------------------------------------------------------- handlers
class Api:
    def __init__(self, st: State):
        self.st = st

    # ---------------------------------------------------------------- health
    async def health(self, request):
        if not _is_loopback(self.st.client_ip(request)):
            return auth_err("forbidden", "Health endpoint is only available from localhost", 403)
        return jresp({"status": "healthy", "version": SERVER_VERSION, "api_version": "v1", "build_date": BUILD_DATE})

    # ---------------------------------------------------------------- auth
    async def _json_body(self, request, allowed: tuple[str, ...], required: tuple[str, ...], aliases=None):
        """actix web::Json + deny_unknown_fields: errors are 400 plain text."""
        aliases = aliases or {}
        ct = request.headers.get("Content-Type", "")
        if "json" not in ct.lower():
            raise web.HTTPBadRequest(text="Content type error")
        raw = await request.read()
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as ex:
            raise web.HTTPBadRequest(text=f"Json deserialize error: {ex}") from None
        if not isinstance(obj, dict):
            raise web.HTTPBadRequest(text="Json deserialize error: invalid type, expected a map")
        out = {}
        for k, v in obj.items():
            canon = aliases.get(k, k)
            if canon not in allowed:
                exp_ = ", ".join(f"`{a}`" for a in allowed)
                raise web.HTTPBadRequest(text=f"Json deserialize error: unknown field `{k}`, expected one of {exp_}")
            if canon in out:
                raise web.HTTPBadRequest(text=f"Json deserialize error: duplicate field `{canon}`")
            out[canon] = v
        for k in required:
            if k not in out:
                raise web.HTTPBadRequest(text=f"Json deserialize error: missing field `{k}`")
        for k, v in out.items():
            if v is not None and not isinstance(v, str):
                raise web.HTTPBadRequest(text=f"Json deserialize error: invalid type for `{k}`, expected a string")
        return out

    async def login(self, request):
        st = self.st
        ip = st.client_ip(request)
        body = await self._json_body(request, ("user", "password"), ("user", "password"), {"username": "user"})
        user, pw = body["user"] or "", body["password"] or ""
        if len(user.encode()) > 128 or len(pw.encode()) > 256:
            return auth_err("bad_request", "User or password too long", 400)
        if not st.auth_buckets.take(ip):
            return auth_err("rate_limited", "Too many authentication requests. Please retry shortly.", 429)
        u = st.store.live_user(user)
        if u is None:
            return auth_err("unauthorized", "Invalid credentials", 401)
        now = time.time()
        if u.get("locked_until") and u["locked_until"] > now:
            return auth_err("account_locked", "Account is temporarily locked due to too many failed login attempts",
                            401)
        if not u["password_hash"]:
            if not _is_loopback(ip):
                return auth_err("forbidden", "System users with empty passwords cannot authenticate remotely", 403)
            if pw == "":
                return auth_err("setup_required", "Server requires initial setup. Call POST /v1/api/auth/setup.",
                                428)
            return auth_err("unauthorized", "Invalid credentials", 401)
        if not verify_password(pw, u["password_hash"]):
            failed = int(u.get("failed") or 0) + 1
            st.store.note_login_attempt(u["id"], failed, now + LOCKOUT_SECONDS if failed >= LOCKOUT_ATTEMPTS else 0)
            return auth_err("unauthorized", "Invalid credentials", 401)
        if u.get("failed"):
            st.store.note_login_attempt(u["id"], 0, 0)
        return st.token_response(u)

    async def refresh(self, request):
        st = self.st
        ip = st.client_ip(request)
        token = request.cookies.get("kalamdb_refresh")
        if not token:
            h = request.headers.get("Authorization", "")
            if h.startswith("Bearer "):
                token = h[7:].strip()
        if not st.auth_buckets.take(ip):
            return auth_err("rate_limited", "Too many authentication requests. Please retry shortly.", 429)
        if not token:
            return auth_err("unauthorized", "Refresh token required", 401)
        try:
            uid, _role = st.validate_access(token, "refresh")
        except TokenError as ex:
            return auth_err("unauthorized", ex.message if ex.code == "TOKEN_EXPIRED" else "Invalid credentials", 401)
        return st.token_response(st.store.live_user(uid))

    async def me(self, request):
        st = self.st
        h = request.headers.get("Authorization", "")
        token = h[7:].strip() if h.startswith("Bearer ") else request.cookies.get("kalamdb_auth")
        if not token:
            return auth_err("unauthorized", "Authentication required", 401)
        try:
            uid, _ = st.validate_access(token)
        except TokenError as ex:
            return auth_err("unauthorized", ex.message, 401)
        u = st.store.live_user(uid)
        return jresp({"user": st.user_info(u), "admin_ui_access": u["role"] in ADMIN_ROLES})

    async def logout(self, request):
        resp = jresp({"message": "Logged out successfully"})
        resp.del_cookie("kalamdb_auth", path="/")
        resp.del_cookie("kalamdb_refresh", path="/")
        return resp

    async def setup(self, request):
        st = self.st
        ip = st.client_ip(request)
        if not _is_loopback(ip) and not st.settings.allow_remote_setup:
            return auth_err("forbidden", "Setup is only allowed from localhost", 403)
        body = await self._json_body(request, ("user", "password", "root_password", "email"),
                                     ("user", "password", "root_password"), {"username": "user"})
        if not st.auth_buckets.take(ip):
            return auth_err("rate_limited", "Too many authentication requests. Please retry shortly.", 429)
        root = st.store.users.get("root")
        if root is not None and root["password_hash"]:
            return auth_err("already_configured", "Server is already configured", 409)
        user = body["user"] or ""
        for pw in (body["password"], body["root_password"]):
            msg = validate_password(pw or "")
            if msg:
                return auth_err("weak_password", msg, 400)
        if not user or user == "root" or len(user) > 128 or any(ch.isspace() for ch in user):
            return auth_err("invalid_user", "Invalid user name", 400)
        if st.store.live_user(user) is not None:
            return auth_err("user_exists", f"User '{user}' already exists", 409)
        st.store.put_user(user, hash_password(body["password"]), "dba", body.get("email"))
        if root is None:
            st.store.put_user("root", hash_password(body["root_password"]), "system", "root@localhost")
        else:
            st.store.update_user("root", password_hash=hash_password(body["root_password"]))
        return jresp({"user": st.user_info(st.store.users[user]),
                      "message": "Server setup complete. You can now log in with the new DBA user."})

    async def status(self, request):
        st = self.st
        if not _is_loopback(st.client_ip(request)) and not st.settings.allow_remote_setup:
            return auth_err("forbidden", "Setup status is only available from localhost", 403)
        root = st.store.users.get("root")
        needs = root is None or not root["password_hash"]
        return jresp({"needs_setup": needs,
                      "message": "Server requires initial setup" if needs else "Server is configured"})

    # ---------------------------------------------------------------- sql
    async def sql(self, request):
        st = self.st
        t0 = time.perf_counter()
        h = request.headers.get("Authorization")

        def fail(code, message, status):
            return web.Response(body=orjson.dumps({"status": "error", "error": {"code": code, "message": message},
                                                   "results": [], "took": round((time.perf_counter() - t0) * 1000, 3)}),
                                status=status, content_type=JSON)

        if not h:
            return fail("MISSING_AUTHORIZATION", "Authentication required", 401)
        if not h.startswith("Bearer "):
            return fail("INVALID_CREDENTIALS", "Invalid credentials", 401)
        try:
            uid, role = st.validate_access(h[7:].strip())
        except TokenError as ex:
            return fail(ex.code, ex.message if ex.code == "TOKEN_EXPIRED" else "Invalid credentials", 401)
        session = Session(uid, role)

        def err(code, message, status, safe=True):
            if not safe and role not in ADMIN_ROLES and code in PUBLIC_MESSAGES:
                message = PUBLIC_MESSAGES[code]
            return web.Response(body=orjson.dumps({"status": "error", "results": [],
                                                   "took": round((time.perf_counter() - t0) * 1000, 3),
                                                   "error": {"code": code, "message": message}}),
                                status=status, content_type=JSON)

        if not st.query_buckets.take(uid):
            return err("RATE_LIMIT_EXCEEDED", "Too many queries per second. Please slow down.", 429)
        raw = await request.read()
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
        except (orjson.JSONDecodeError, ValueError) as ex:
            return err("INVALID_INPUT", f"Invalid JSON payload: {ex}", 400)
        sql = body.get("sql")
        if not isinstance(sql, str):
            return err("INVALID_INPUT", "Invalid JSON payload: missing field `sql`", 400)
        params = body.get("params")
        pdict = {}
        if params is not None:
            if not isinstance(params, list):
                return err("INVALID_PARAMETER", "params must be a JSON array", 400)
            if len(params) > 50:
                return err("INVALID_PARAMETER", "Too many parameters (max 50)", 400)
            for i, v in enumerate(params):
                if isinstance(v, (list, dict)):
                    return err("INVALID_PARAMETER", f"Parameter ${i + 1}: arrays and objects are not supported", 400)
                if isinstance(v, str) and len(v) > 512 * 1024:
                    return err("INVALID_PARAMETER", f"Parameter ${i + 1} exceeds 512 KiB", 400)
                pdict[f"p{i + 1}"] = v
        ns = body.get("namespace_id") or "default"
        if not isinstance(ns, str):
            return err("INVALID_INPUT", "Invalid JSON payload: namespace_id must be a string", 400)
        eng = st.engine
        try:
            stmts = eng.prepare(sql)
        except SqlError as ex:
            return err(ex.code, ex.message, ex.status, ex.safe)
        if params and len(stmts) > 1:
            return err("PARAMS_WITH_BATCH", "Parameters are not supported with multiple statements", 400)
        if st.faults.slow_select_ms and any(s.is_select for s in stmts):
            await asyncio.sleep(st.faults.slow_select_ms / 1000.0)
        if st.faults.write_capacity and not all(s.is_select for s in stmts):
            await st.write_queue.turn(st.faults.write_capacity)
        try:
            results = eng.execute(session, stmts, pdict, ns)
        except SqlError as ex:
            return err(ex.code, ex.message, ex.status, ex.safe)
        except Exception as ex:  # pragma: no cover
            log.exception("sql failed")
            return err("INTERNAL_ERROR", f"Internal error: {type(ex).__name__}", 500, False)
        took = round((time.perf_counter() - t0) * 1000, 3)
        if len(stmts) == 1 and stmts[0].is_select:
            r = results[0]
            res = {"schema": r.schema, "rows": r.rows, "row_count": r.row_count, "as_user": r.as_user}
            return web.Response(body=orjson.dumps({"status": "success", "results": [res], "took": took,
                                                   "error": None}), content_type=JSON)
        if len(stmts) == 1:
            out = [r.to_json() for r in results]
        else:
            out = [r.to_json() for r in results if r.kind != "dml"]
            sums = {}
            for r in results:
                if r.kind == "dml":
                    sums.setdefault(r.dml, [0, r.as_user])[0] += r.row_count
            for k in ("Inserted", "Updated", "Deleted"):
                if k in sums:
                    out.append({"row_count": sums[k][0], "message": f"{k} {sums[k][0]} row(s)", "as_user": sums[k][1]})
        return web.Response(body=orjson.dumps({"status": "success", "results": out, "took": took}),
                            content_type=JSON)

    # ---------------------------------------------------------------- faults admin
    async def faults(self, request):
        st = self.st
        if not _is_loopback(st.client_ip(request)):
            return auth_err("forbidden", "The fault admin route answers loopback peers only", 403)
        if request.method in ("PUT", "PATCH"):
            try:
                obj = orjson.loads(await request.read())
                if request.method == "PUT":
                    st.faults.replace(obj)
                else:
                    st.faults.patch(obj)
            except (orjson.JSONDecodeError, FaultError, ValueError) as ex:
                return auth_err("bad_request", str(ex), 400)
            st.live.delay_late_us.clear()  # the delay figures in system.stats: since faults were last set
            log.warning("faults now %s", st.faults.as_dict())
        return jresp(st.faults.as_dict())


# -------------------------------------------------------------------------------- app / main
def build_app(st: State) -> web.Application:
    app = web.Application(client_max_size=10 * 1024 * 1024)
    api = Api(st)
    wsh = WsHandler(st)
    r = app.router
    r.add_get("/health", api.health)
    r.add_get("/v1/api/healthcheck", api.health)
    r.add_post("/v1/api/auth/login", api.login)
    r.add_post("/v1/api/auth/refresh", api.refresh)
    r.add_get("/v1/api/auth/me", api.me)
    r.add_post("/v1/api/auth/logout", api.logout)
    r.add_post("/v1/api/auth/setup", api.setup)
    r.add_get("/v1/api/auth/status", api.status)
    r.add_post("/v1/api/sql", api.sql)
    r.add_get("/v1/ws", wsh.handle)
    r.add_route("GET", "/_standin/faults", api.faults)
    r.add_route("PUT", "/_standin/faults", api.faults)
    r.add_route("PATCH", "/_standin/faults", api.faults)
    return app


def ensure_root(store: Store, settings):
    if "root" not in store.users:
        pw = settings.root_password
        store.put_user("root", hash_password(pw) if pw else "", "system", "root@localhost")


async def serve(args, settings, faults: Faults, db_path: str, cleanup_dir: str | None):
    store = Store(db_path)
    ensure_root(store, settings)
    st = State(settings, store, faults)
    loop = asyncio.get_running_loop()
    st.live.loop = loop
    app = build_app(st)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.3)
    await runner.setup()
    fam = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    sock.setblocking(False)
    site = web.SockSite(runner, sock)
    await site.start()
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    hb = asyncio.ensure_future(st.live.heartbeat_loop())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    faults.start_clock()  # crash_at given at start-up counts from the moment it listens
    print(f"standin listening on http://{host}:{port}", flush=True)
    await stop.wait()
    st.shutting_down = True
    hb.cancel()
    for c in list(st.live.conns.values()):
        c.close(1001, "Server shutting down")
    for _ in range(30):
        if not st.live.conns:
            break
        await asyncio.sleep(0.01)
    await runner.cleanup()
    store.close()
    if cleanup_dir:
        shutil.rmtree(cleanup_dir, ignore_errors=True)


class KalamLogFormatter(logging.Formatter):
    """KalamDB's server.log lines (tracing-subscriber's plain format, UTC):
    ``2026-05-04T10:11:12.123456Z  WARN MainThread kalamdb_live::notification: message``."""

    LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR"}

    def format(self, record):
        ts = _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        level = self.LEVELS.get(record.levelname, record.levelname)
        line = f"{ts} {level:>5} {record.threadName} {record.name.replace('.', '::')}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: int, logs_dir: str | None) -> str | None:
    """stderr as before; with a logs dir also <dir>/server.log (appended, as KalamDB). The one-line-per-
    dropped-change warnings go to the file only when there is one: a flood of them on stderr could fill
    an owner's pipe and stall the server."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not logs_dir:
        return None
    os.makedirs(logs_dir, exist_ok=True)
    path = os.path.join(logs_dir, "server.log")
    fh = logging.FileHandler(path, mode="a", encoding="utf-8")
    fh.setFormatter(KalamLogFormatter())
    logging.getLogger().addHandler(fh)
    notif = logging.getLogger("kalamdb_live::notification")
    notif.addHandler(fh)
    notif.propagate = False
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m standin", description="KalamDB-compatible stand-in server")
    ap.add_argument("--host", default=None, help="default: [server] host of --config, else 127.0.0.1")
    ap.add_argument("--port", type=int, default=None, help="0 = any free port; default: [server] port of --config, else 0")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--config", default=None)
    ap.add_argument("--fault", action="append", default=[], metavar="KIND=VALUE")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--log-level", default=os.environ.get("STANDIN_LOG_LEVEL", "WARNING"))
    ap.add_argument("--logs-dir", default=None,
                    help="write DIR/server.log (default: KALAMDB_LOGS_DIR, else [logging] logs_path of --config)")
    args = ap.parse_args(argv)
    level = getattr(logging, args.log_level.upper(), logging.WARNING)
    try:
        settings = load_settings(args.config)
    except (OSError, ValueError) as ex:
        print(f"standin: bad config: {ex}", file=sys.stderr)
        return 2
    if args.logs_dir:
        settings.logs_path = args.logs_dir
    try:
        setup_logging(level, settings.logs_path)
    except OSError as ex:
        print(f"standin: cannot open the server log in {settings.logs_path!r}: {ex}", file=sys.stderr)
        return 2
    srv = settings.raw.get("server", {}) if args.config else {}
    if args.host is None:
        args.host = os.environ.get("KALAMDB_SERVER_HOST") or str(srv.get("host", "127.0.0.1"))
    if args.port is None:
        args.port = int(os.environ.get("KALAMDB_SERVER_PORT") or srv.get("port", 0))
    weak = settings.jwt_secret in WEAK_SECRETS or len(settings.jwt_secret) < 32
    if weak and args.host not in ("127.0.0.1", "localhost", "::1"):
        print("standin: refusing to start: the JWT secret is a placeholder or shorter than 32 characters and the "
              "host is not loopback (set KALAMDB_JWT_SECRET)", file=sys.stderr)
        return 1
    init = {}
    try:
        for f in args.fault:
            k, v = parse_cli_fault(f)
            init[k] = v
    except (FaultError, ValueError) as ex:
        print(f"standin: bad --fault: {ex}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else init.get("seed")
    faults = Faults(init, seed=seed)
    cleanup_dir = None
    if args.data_dir:
        os.makedirs(args.data_dir, exist_ok=True)
        db_path = os.path.join(args.data_dir, "standin.sqlite3")
    else:
        cleanup_dir = tempfile.mkdtemp(prefix="standin-")
        db_path = os.path.join(cleanup_dir, "standin.sqlite3")
    try:
        asyncio.run(serve(args, settings, faults, db_path, cleanup_dir))
    except OSError as ex:
        print(f"standin: cannot start: {ex}", file=sys.stderr)
        if cleanup_dir:
            shutil.rmtree(cleanup_dir, ignore_errors=True)
        return 1
    return 0
