"""SQL engine: KalamDB statements on SQLite (protocol §3, §4).

Parsed statements are cached by statement text; compiled SQLite SQL is cached per statement and
catalog version. DML runs synchronously on the event loop (one writer, so `_seq` order = commit
order) and hands its changes to the live manager after commit.
"""
from __future__ import annotations

import os
import re
import sqlite3
import time
import uuid

import orjson
import sqlglot
from sqlglot import exp

from .auth import ADMIN_ROLES, ROLE_WORDS, hash_password
from .faults import CRASH_EXIT_CODE
from .storage import Column, TableDef, qi, rfc3339
from .types import CoerceError, coerce, encode, infer_dtype, map_sql_type


class SqlError(Exception):
    def __init__(self, code: str, message: str, status: int = 400, safe: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.safe = safe


def perm_denied(msg: str) -> SqlError:
    return SqlError("PERMISSION_DENIED", f"Permission denied: {msg}", 403, safe=True)


def exec_error(msg: str, safe: bool = False) -> SqlError:
    return SqlError("SQL_EXECUTION_ERROR", msg, 400, safe=safe)


PUBLIC_MESSAGES = {
    "SQL_EXECUTION_ERROR": "SQL statement failed",
    "INVALID_SQL": "SQL statement is invalid or not allowed",
    "TABLE_NOT_FOUND": "Requested table is not available",
    "INTERNAL_ERROR": "SQL request failed",
}


class Session:
    __slots__ = ("user_id", "role")

    def __init__(self, user_id: str, role: str):
        self.user_id = user_id
        self.role = role

    @property
    def is_admin(self):
        return self.role in ADMIN_ROLES


class Result:
    __slots__ = ("kind", "schema", "rows", "row_count", "message", "as_user", "dml")

    def __init__(self, kind, row_count=0, message=None, as_user="", schema=None, rows=None, dml=None):
        self.kind = kind  # select | dml | ddl
        self.schema = schema
        self.rows = rows
        self.row_count = row_count
        self.message = message
        self.as_user = as_user
        self.dml = dml  # Inserted | Updated | Deleted

    def to_json(self) -> dict:
        d = {}
        if self.schema:
            d["schema"] = self.schema
        if self.rows:
            d["rows"] = self.rows
        d["row_count"] = self.row_count
        if self.message is not None:
            d["message"] = self.message
        d["as_user"] = self.as_user
        return d


class Ctx:
    __slots__ = ("caller", "subject", "role", "params", "namespace", "pending", "impersonated")

    def __init__(self, caller: Session, params: dict, namespace: str):
        self.caller = caller
        self.subject = caller.user_id
        self.role = caller.role
        self.params = params
        self.namespace = namespace
        self.pending: list = []
        self.impersonated = False

    @property
    def is_admin(self):
        return self.role in ADMIN_ROLES


# ---------------------------------------------------------------------------------------- text
def split_statements(sql: str) -> list[str]:
    """Split on top-level ';' (quote-aware), rewrite `$N` params to `:pN`."""
    out: list[str] = []
    buf: list[str] = []
    i, n, q = 0, len(sql), None
    depth = 0
    while i < n:
        ch = sql[i]
        if q:
            buf.append(ch)
            if ch == q:
                if i + 1 < n and sql[i + 1] == q:
                    buf.append(q)
                    i += 2
                    continue
                q = None
            i += 1
            continue
        if ch in "'\"`":
            q = ch
            buf.append(ch)
        elif ch == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            continue
        elif ch == "(":
            depth += 1
            buf.append(ch)
        elif ch == ")":
            depth -= 1
            buf.append(ch)
        elif ch == ";" and depth <= 0:
            out.append("".join(buf))
            buf = []
        elif ch == "$" and i + 1 < n and sql[i + 1].isdigit():
            j = i + 1
            while j < n and sql[j].isdigit():
                j += 1
            buf.append(":p" + sql[i + 1:j])
            i = j
            continue
        else:
            buf.append(ch)
        i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


IDENT = r'(?:"[^"]+"|`[^`]+`|\'[^\']+\'|[A-Za-z_][\w]*)'


def unq(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'`":
        return s[1:-1]
    return s


def norm_ident(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"`":
        return s[1:-1]
    return unq(s).lower()


def matching_paren(s: str, start: int) -> int:
    depth, q = 0, None
    for i in range(start, len(s)):
        ch = s[i]
        if q:
            if ch == q:
                q = None
            continue
        if ch in "'\"`":
            q = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def split_top(s: str, sep: str = ",") -> list[str]:
    parts, buf, depth, q = [], [], 0, None
    for ch in s:
        if q:
            buf.append(ch)
            if ch == q:
                q = None
            continue
        if ch in "'\"`":
            q = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    if "".join(buf).strip():
        parts.append("".join(buf).strip())
    return parts


def now_us() -> int:
    return int(time.time() * 1_000_000)


# ---------------------------------------------------------------------------------------- values
def literal_value(e):
    """Constant expression -> python value, or raise ValueError."""
    if isinstance(e, exp.Literal):
        if e.is_string:
            return e.this
        t = e.this
        try:
            return int(t)
        except ValueError:
            return float(t)
    if isinstance(e, exp.Neg):
        v = literal_value(e.this)
        if isinstance(v, (int, float)):
            return -v
    if isinstance(e, exp.Boolean):
        return bool(e.this)
    if isinstance(e, exp.Null):
        return None
    if isinstance(e, exp.Paren):
        return literal_value(e.this)
    raise ValueError("not a literal")


def func_name(e) -> str | None:
    if isinstance(e, exp.Anonymous):
        return str(e.this).upper()
    if isinstance(e, exp.CurrentTimestamp):
        return "NOW"
    if isinstance(e, exp.CurrentUser):
        return "CURRENT_USER"
    if isinstance(e, exp.Func):
        return e.sql_name().upper() if hasattr(e, "sql_name") else None
    return None


def make_getter(e, engine: "Engine"):
    """Compile an INSERT value expression to getter(ctx) -> python value."""
    if isinstance(e, exp.Placeholder):
        name = str(e.this)

        def g(ctx, name=name):
            try:
                return ctx.params[name]
            except KeyError:
                raise exec_error(f"Missing value for parameter ${name[1:]}", safe=True) from None
        return g
    try:
        v = literal_value(e)
        return lambda ctx, v=v: v
    except ValueError:
        pass
    if isinstance(e, exp.Cast):
        return make_getter(e.this, engine)
    fn = func_name(e)
    if fn in ("NOW", "CURRENT_TIMESTAMP"):
        return lambda ctx: now_us()
    if fn == "SNOWFLAKE_ID":
        return lambda ctx: engine.store.seq.next()
    if fn in ("UUID_V7", "UUID", "GEN_RANDOM_UUID"):
        return lambda ctx: str(uuid.uuid4())
    if fn == "ULID":
        return lambda ctx: uuid.uuid4().hex.upper()[:26]
    if fn == "CURRENT_USER":
        return lambda ctx: ctx.subject
    sql = "SELECT " + e.sql(dialect="sqlite")

    def g(ctx, sql=sql):
        try:
            return engine.store.db.execute(sql, ctx.params).fetchone()[0]
        except sqlite3.Error as ex:
            raise exec_error(f"Cannot evaluate expression: {ex}") from None
    return g


def default_getter(c: Column, engine: "Engine"):
    d = c.default
    if not d:
        return None
    if d[0] == "lit":
        return lambda ctx, v=d[1]: v
    fn = d[1]
    if fn == "SNOWFLAKE_ID":
        return lambda ctx: engine.store.seq.next()
    if fn in ("NOW", "CURRENT_TIMESTAMP"):
        return lambda ctx: now_us()
    if fn in ("UUID_V7", "UUID"):
        return lambda ctx: str(uuid.uuid4())
    if fn == "ULID":
        return lambda ctx: uuid.uuid4().hex.upper()[:26]
    if fn == "CURRENT_USER":
        return lambda ctx: ctx.subject
    return None


def lower_columns(node):
    for col in node.find_all(exp.Column):
        ident = col.this
        if isinstance(ident, exp.Identifier) and not ident.quoted:
            ident.set("this", ident.this.lower())
    return node


_CMP = (exp.EQ, exp.NEQ, exp.LT, exp.GT, exp.LTE, exp.GTE)


def fix_ts_literals(node, t):
    """`ts_col > '2026-01-01T00:00:00Z'` -> compare with microseconds (TIMESTAMPs are stored as integers)."""
    from .types import coerce as _coerce
    for cmp in list(node.find_all(*_CMP)):
        for a, b in ((cmp.this, cmp.expression), (cmp.expression, cmp.this)):
            if isinstance(a, exp.Column) and isinstance(b, exp.Literal) and b.is_string:
                c = t.colmap.get(a.name)
                if c is not None and c.cat in ("ts", "date"):
                    try:
                        b.replace(exp.Literal.number(_coerce(c.cat, b.this, c.name)))
                    except ValueError:
                        pass
    return node


# ---------------------------------------------------------------------------------------- statements
class Stmt:
    kind = "ddl"
    is_select = False
    is_dml = False

    def run(self, engine: "Engine", ctx: Ctx) -> Result:
        raise NotImplementedError


class TxnStmt(Stmt):
    def __init__(self, op):
        self.op = op


class RawError(Stmt):
    def __init__(self, err: SqlError):
        self.err = err

    def run(self, engine, ctx):
        raise self.err


def resolve_table(engine: "Engine", tbl: exp.Table, ctx: Ctx):
    ns = tbl.args.get("db")
    name = tbl.this
    ns_s = (ns.this if ns.quoted else ns.this.lower()) if isinstance(ns, exp.Identifier) else (
        ctx.namespace.lower() if ctx.namespace else "default")
    name_s = name.this if getattr(name, "quoted", False) else str(name.this).lower()
    if ns_s == "system":
        view = engine.system_view(name_s)
        if view is None:
            raise exec_error(f"Table 'system.{name_s}' not found", safe=True)
        if not ctx.is_admin:
            raise perm_denied(f"system.{name_s} requires DBA or System role")
        return view
    t = engine.store.tables.get((ns_s, name_s))
    if t is None:
        if ns_s not in engine.store.namespaces:
            raise exec_error(f"Namespace '{ns_s}' not found", safe=True)
        raise exec_error(f"Table '{ns_s}.{name_s}' not found", safe=True)
    return t


def check_read(t, ctx: Ctx, user_error=perm_denied):
    if t.kind == "SHARED":
        lvl = t.access_level
        if ctx.role in ADMIN_ROLES:
            return
        if lvl == "DBA":
            raise user_error(f"table {t.full_name} requires DBA role")
        if ctx.role == "service":
            return
        if lvl != "PUBLIC":
            raise user_error(f"shared table {t.full_name} is not PUBLIC")


def check_write(t, ctx: Ctx):
    if getattr(t, "kind", "") == "SYSTEM":
        raise perm_denied("system tables are read-only")
    if t.kind == "SHARED":
        if ctx.impersonated:
            raise exec_error("EXECUTE AS USER is not allowed on SHARED tables", safe=True)
        if ctx.role in ADMIN_ROLES:
            return
        if ctx.role == "service" and t.access_level != "DBA":
            return
        raise perm_denied(f"role {ctx.role} cannot write shared table {t.full_name}")


def owner_of(t, ctx: Ctx) -> str:
    return ctx.subject if t.kind in ("USER", "STREAM") else ""


class SelectStmt(Stmt):
    kind = "select"
    is_select = True

    def __init__(self, ast):
        self.ast = ast
        self._cache = {}
        tables = list(ast.find_all(exp.Table))
        if len(tables) > 1 or ast.args.get("joins"):
            raise SqlError("INVALID_SQL", "Invalid SQL: only single-table SELECTs are supported by the stand-in")
        self.table = tables[0] if tables else None

    def compile(self, engine, t):
        key = (id(t), engine.store.catalog_version)
        c = self._cache.get(key)
        if c is not None:
            return c
        q = fix_ts_literals(lower_columns(self.ast.copy()), t)
        tbl = next(q.find_all(exp.Table))
        alias = tbl.alias or tbl.name
        tbl.replace(exp.Table(this=exp.to_identifier(t.phys, quoted=True),
                              alias=exp.TableAlias(this=exp.to_identifier(alias))))
        # star expansion (hides _owner)
        new_exprs = []
        for e in q.expressions:
            if isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star)):
                new_exprs.extend(exp.column(c.name, quoted=True) for c in t.all_cols)
            else:
                new_exprs.append(e)
        q.set("expressions", new_exprs)
        system = t.kind == "SYSTEM"
        if not system:
            cond = exp.and_(exp.condition("_deleted = 0"), exp.condition("_owner = :__owner"))
            where = q.args.get("where")
            q.set("where", exp.Where(this=exp.and_(exp.Paren(this=where.this), cond) if where else cond))
        has_agg = any(True for _ in q.find_all(exp.AggFunc))
        if not q.args.get("order") and not q.args.get("group") and not has_agg:
            if t.pk is not None:
                q = q.order_by(exp.column(t.pk.name, quoted=True))
            elif not system:
                q = q.order_by(exp.column("_seq"))
        lim_node = q.args.get("limit")
        limit = engine.settings.default_query_limit
        if lim_node is not None:
            try:
                limit = int(literal_value(lim_node.expression))
            except (ValueError, TypeError):
                limit = engine.settings.max_query_limit
        limit = max(0, min(limit, engine.settings.max_query_limit))
        q.set("limit", exp.Limit(expression=exp.Literal.number(limit)))
        # output schema
        schema = []
        for i, e in enumerate(q.expressions):
            base = e.unalias() if isinstance(e, exp.Alias) else e
            if isinstance(base, exp.Column):
                name = e.alias_or_name
            elif isinstance(e, exp.Alias):
                name = e.alias
            else:
                name = base.sql().lower()
            dtype, flags = None, None
            if isinstance(base, exp.Column) and base.name in t.colmap:
                col = t.colmap[base.name]
                dtype, flags = col.dtype, col.flags()
            elif isinstance(base, exp.Count):
                dtype = "BigInt"
            elif isinstance(base, (exp.Max, exp.Min)) and isinstance(base.this, exp.Column) and base.this.name in t.colmap:
                dtype = t.colmap[base.this.name].dtype
            elif isinstance(base, exp.Avg):
                dtype = "Double"
            schema.append([name, dtype, flags])
        sql = q.sql(dialect="sqlite")
        c = (sql, schema)
        if len(self._cache) > 8:
            self._cache.clear()
        self._cache[key] = c
        return c

    def run(self, engine, ctx):
        if self.table is None:
            sql = self.ast.sql(dialect="sqlite")
            try:
                cur = engine.store.db.execute(sql, ctx.params)
            except sqlite3.Error as ex:
                raise engine.map_sqlite_error(ex) from None
            names = [d[0] for d in cur.description]
            rows = [list(r) for r in cur.fetchall()]
            schema = [[n, None, None] for n in names]
            return engine.select_result(schema, rows, ctx, None)
        t = resolve_table(engine, self.table, ctx)
        check_read(t, ctx)
        if t.kind == "SYSTEM":
            engine.materialize(t)
        sql, schema = self.compile(engine, t)
        params = ctx.params
        if t.kind != "SYSTEM":
            params = dict(params)
            params["__owner"] = owner_of(t, ctx)
        try:
            rows = engine.store.db.execute(sql, params).fetchall()
        except sqlite3.Error as ex:
            raise engine.map_sqlite_error(ex) from None
        return engine.select_result(schema, rows, ctx, t)


class InsertStmt(Stmt):
    kind = "dml"
    is_dml = True

    def __init__(self, ast, engine):
        self.ast = ast
        target = ast.this
        if isinstance(target, exp.Schema):
            self.table = target.this
            self.cols = [norm_ident(i.sql()) if getattr(i, "quoted", False) else i.name.lower()
                         for i in target.expressions]
        else:
            self.table = target
            self.cols = None
        values = ast.expression
        if not isinstance(values, exp.Values):
            raise SqlError("INVALID_SQL", "Invalid SQL: only INSERT ... VALUES is supported")
        self.rows = []
        for tup in values.expressions:
            items = tup.expressions if isinstance(tup, exp.Tuple) else [tup]
            self.rows.append([make_getter(e, engine) for e in items])
        self._plan = {}

    def plan(self, engine, t):
        key = (id(t), engine.store.catalog_version)
        p = self._plan.get(key)
        if p is not None:
            return p
        cols = self.cols if self.cols is not None else [c.name for c in t.columns]
        for c in cols:
            if c not in t.colmap or c in ("_seq", "_deleted"):
                raise exec_error(f"Schema error: No field named {c}", safe=True)
        idx = {c: i for i, c in enumerate(cols)}
        for r in self.rows:
            if len(r) != len(cols):
                raise exec_error("Inserted row has wrong number of values", safe=True)
        layout = []
        for c in t.columns:
            if c.name in idx:
                layout.append((c, idx[c.name], None))
            else:
                layout.append((c, None, default_getter(c, engine)))
        p = self._plan[key] = layout
        return p

    def run(self, engine, ctx):
        t = resolve_table(engine, self.table, ctx)
        check_write(t, ctx)
        layout = self.plan(engine, t)
        owner = owner_of(t, ctx)
        seqgen = engine.store.seq
        prepared = []
        for getters in self.rows:
            vals = []
            for c, gi, dg in layout:
                v = getters[gi](ctx) if gi is not None else (dg(ctx) if dg is not None else None)
                if v is not None and not (type(v) is str and c.cat == "text"):
                    try:
                        v = coerce(c.cat, v, c.name)
                    except CoerceError as ex:
                        raise exec_error(str(ex), safe=True) from None
                if v is None and (c.not_null or c.pk):
                    raise exec_error(f"Column '{c.name}' cannot be null", safe=True)
                vals.append(v)
            prepared.append(vals)
        db = engine.store.db
        notes = []
        db.execute("SAVEPOINT ins")
        try:
            for vals in prepared:
                seq = seqgen.next()
                try:
                    db.execute(t.insert_sql, (*vals, seq, 0, owner))
                except sqlite3.IntegrityError:
                    pkc = t.pk
                    pkv = vals[t.columns.index(pkc)] if pkc else None
                    row = db.execute(f"SELECT _deleted FROM {qi(t.phys)} WHERE _owner=? AND {qi(pkc.name)}=?",
                                     (owner, pkv)).fetchone() if pkc else None
                    if row and row[0]:
                        db.execute(f"DELETE FROM {qi(t.phys)} WHERE _owner=? AND {qi(pkc.name)}=?", (owner, pkv))
                        db.execute(t.insert_sql, (*vals, seq, 0, owner))
                    else:
                        raise exec_error(f"Primary key violation: value '{pkv}' already exists in column "
                                         f"'{pkc.name if pkc else '?'}'", safe=True) from None
                row = {c.name: v for c, v in zip(t.columns, vals)}
                row["_seq"] = seq
                row["_deleted"] = False
                notes.append(("insert", row, None))
            db.execute("RELEASE ins")
        except BaseException:
            db.execute("ROLLBACK TO ins")
            db.execute("RELEASE ins")
            raise
        for kind, new, old in notes:
            ctx.pending.append((t, kind, new, old, owner))
        n = len(prepared)
        return Result("dml", n, f"Inserted {n} row(s)", ctx.subject, dml="Inserted")


class _WhereDml(Stmt):
    kind = "dml"
    is_dml = True

    def _compile_where(self, engine, t, extra_select: list[str]):
        q_where = self.ast.args.get("where")
        if q_where is None:
            raise exec_error(f"{self.verb} requires a WHERE clause", safe=True)
        where = fix_ts_literals(lower_columns(q_where.this.copy()), t)
        alias = self.table.alias or self.table.name
        sel = ["rowid"] + [f"{qi(alias)}.{qi(c.name)}" for c in t.all_cols] + extra_select
        return (f"SELECT {', '.join(sel)} FROM {qi(t.phys)} AS {qi(alias)} WHERE ({where.sql(dialect='sqlite')}) "
                f"AND _deleted = 0 AND _owner = :__owner")


class UpdateStmt(_WhereDml):
    verb = "UPDATE"

    def __init__(self, ast):
        self.ast = ast
        self.table = ast.this
        self.sets = []
        for a in ast.expressions:
            if not isinstance(a, exp.EQ) or not isinstance(a.this, exp.Column):
                raise SqlError("INVALID_SQL", "Invalid SQL: bad SET clause")
            col = a.this.this
            name = col.this if col.quoted else col.this.lower()
            self.sets.append((name, lower_columns(a.expression.copy())))
        self._plan = {}

    def plan(self, engine, t):
        key = (id(t), engine.store.catalog_version)
        p = self._plan.get(key)
        if p:
            return p
        if t.kind == "STREAM":
            raise exec_error("UPDATE is not supported for STREAM tables", safe=True)
        cols = []
        for name, e in self.sets:
            c = t.colmap.get(name)
            if c is None or name in ("_seq", "_deleted"):
                raise exec_error(f"Schema error: No field named {name}", safe=True)
            if c.pk:
                raise exec_error(f"Cannot update primary key column '{name}'", safe=True)
            cols.append(c)
        sql = self._compile_where(engine, t, [e.sql(dialect="sqlite") for _, e in self.sets])
        p = self._plan[key] = (sql, cols)
        return p

    def run(self, engine, ctx):
        t = resolve_table(engine, self.table, ctx)
        check_write(t, ctx)
        sql, cols = self.plan(engine, t)
        owner = owner_of(t, ctx)
        params = dict(ctx.params)
        params["__owner"] = owner
        db = engine.store.db
        names = [c.name for c in t.all_cols]
        ncols = len(names)
        db.execute("SAVEPOINT upd")
        notes = []
        try:
            try:
                found = db.execute(sql, params).fetchall()
            except sqlite3.Error as ex:
                raise engine.map_sqlite_error(ex) from None
            for r in found:
                rowid = r[0]
                old = t.row_from_sqlite(names, r[1:1 + ncols])
                new = dict(old)
                changed = []
                for c, v in zip(cols, r[1 + ncols:]):
                    try:
                        v = coerce(c.cat, v, c.name)
                    except CoerceError as ex:
                        raise exec_error(str(ex), safe=True) from None
                    if v is None and c.not_null:
                        raise exec_error(f"Column '{c.name}' cannot be null", safe=True)
                    if v != old.get(c.name) or (v is None) != (old.get(c.name) is None):
                        new[c.name] = v
                        if c.name not in changed:
                            changed.append(c.name)
                if not changed:
                    continue  # no-op update: nothing written, nothing notified
                seq = engine.store.seq.next()
                new["_seq"] = seq
                sets = ", ".join(f"{qi(n)} = ?" for n in changed)
                vals = [new[n] for n in changed]
                db.execute(f"UPDATE {qi(t.phys)} SET {sets}, _seq = ? WHERE rowid = ?", (*vals, seq, rowid))
                notes.append((new, old, changed))
            db.execute("RELEASE upd")
        except BaseException:
            db.execute("ROLLBACK TO upd")
            db.execute("RELEASE upd")
            raise
        for new, old, changed in notes:
            ctx.pending.append((t, "update", new, old, owner, changed))
        n = len(found)
        return Result("dml", n, f"Updated {n} row(s)", ctx.subject, dml="Updated")


class DeleteStmt(_WhereDml):
    verb = "DELETE"

    def __init__(self, ast):
        self.ast = ast
        self.table = ast.this
        self._plan = {}

    def run(self, engine, ctx):
        t = resolve_table(engine, self.table, ctx)
        check_write(t, ctx)
        key = (id(t), engine.store.catalog_version)
        sql = self._plan.get(key)
        if sql is None:
            sql = self._plan[key] = self._compile_where(engine, t, [])
        owner = owner_of(t, ctx)
        params = dict(ctx.params)
        params["__owner"] = owner
        db = engine.store.db
        names = [c.name for c in t.all_cols]
        notes = []
        db.execute("SAVEPOINT del")
        try:
            try:
                found = db.execute(sql, params).fetchall()
            except sqlite3.Error as ex:
                raise engine.map_sqlite_error(ex) from None
            for r in found:
                old = t.row_from_sqlite(names, r[1:])
                if t.kind == "STREAM":
                    db.execute(f"DELETE FROM {qi(t.phys)} WHERE rowid = ?", (r[0],))
                    notes.append((None, old))
                else:
                    seq = engine.store.seq.next()
                    db.execute(f"UPDATE {qi(t.phys)} SET _deleted = 1, _seq = ? WHERE rowid = ?", (seq, r[0]))
                    tomb = dict(old)
                    tomb["_seq"] = seq
                    tomb["_deleted"] = True
                    notes.append((tomb, old))
            db.execute("RELEASE del")
        except BaseException:
            db.execute("ROLLBACK TO del")
            db.execute("RELEASE del")
            raise
        for tomb, old in notes:
            ctx.pending.append((t, "delete", tomb, old, owner))
        n = len(found)
        return Result("dml", n, f"Deleted {n} row(s)", ctx.subject, dml="Deleted")


# ---- DDL ------------------------------------------------------------------------------------------
class CreateNamespace(Stmt):
    def __init__(self, name, if_not_exists):
        self.name, self.ine = name, if_not_exists

    def run(self, engine, ctx):
        if not ctx.is_admin:
            raise perm_denied("CREATE NAMESPACE requires DBA or System role")
        if self.name in engine.store.namespaces:
            if self.ine:
                return Result("ddl", 0, f"Namespace '{self.name}' already exists", ctx.subject)
            raise exec_error(f"Namespace '{self.name}' already exists", safe=True)
        if self.name == "system":
            raise exec_error("Namespace 'system' is reserved", safe=True)
        engine.store.create_namespace(self.name)
        return Result("ddl", 0, f"Namespace '{self.name}' created successfully", ctx.subject)


class DropNamespace(Stmt):
    def __init__(self, name, if_exists, cascade):
        self.name, self.ie, self.cascade = name, if_exists, cascade

    def run(self, engine, ctx):
        if not ctx.is_admin:
            raise perm_denied("DROP NAMESPACE requires DBA or System role")
        if self.name not in engine.store.namespaces:
            if self.ie:
                return Result("ddl", 0, f"Namespace '{self.name}' does not exist", ctx.subject)
            raise exec_error(f"Namespace '{self.name}' not found", safe=True)
        has = [t for (ns, _), t in engine.store.tables.items() if ns == self.name]
        if has and not self.cascade:
            raise exec_error(f"Namespace '{self.name}' contains {len(has)} table(s); use CASCADE", safe=True)
        for t in has:
            engine.live.drop_table(t)
        engine.store.drop_namespace(self.name)
        return Result("ddl", 0, f"Namespace '{self.name}' dropped successfully", ctx.subject)


KEYWORDS_END = ("PRIMARY", "NOT", "NULL", "DEFAULT", "AUTO_INCREMENT", "AUTOINCREMENT", "UNIQUE", "GENERATED",
                "COMMENT", "CHECK", "REFERENCES")


def parse_default(text: str):
    text = text.strip()
    try:
        e = sqlglot.parse_one("SELECT " + text).expressions[0]
    except Exception:
        raise SqlError("INVALID_SQL", f"Invalid SQL: bad DEFAULT expression {text}") from None
    try:
        return ("lit", literal_value(e))
    except ValueError:
        pass
    fn = func_name(e)
    if fn in ("NOW", "CURRENT_TIMESTAMP", "SNOWFLAKE_ID", "UUID_V7", "ULID", "CURRENT_USER", "UUID"):
        return ("func", "NOW" if fn == "CURRENT_TIMESTAMP" else fn)
    raise SqlError("INVALID_SQL", f"Invalid SQL: unsupported DEFAULT {text}")


COLDEF_RE = re.compile(r'^\s*(' + IDENT + r')\s+([A-Za-z_][\w ]*?)(\s*\(([^)]*)\))?(?=\s|$)(.*)$', re.S)
TOKEN_RE = re.compile(r"\s*('(?:[^']|'')*'|[A-Za-z_][\w]*\s*\((?:[^()]|\([^()]*\))*\)|-?[\d.]+|[A-Za-z_][\w]*|\S)", re.S)


def parse_column_defs(body: str):
    cols: list[Column] = []
    table_pk = None
    for item in split_top(body):
        m = re.match(r"^\s*PRIMARY\s+KEY\s*\((.*)\)\s*$", item, re.I | re.S)
        if m:
            keys = [norm_ident(k) for k in split_top(m.group(1))]
            if len(keys) != 1:
                raise exec_error("Composite primary keys are not supported", safe=True)
            table_pk = keys[0]
            continue
        toks = [t for t in TOKEN_RE.findall(item)]
        if len(toks) < 2:
            raise SqlError("INVALID_SQL", f"Invalid SQL: bad column definition '{item}'")
        name = norm_ident(toks[0])
        type_tok = toks[1]
        i = 2
        tname, params = type_tok, []
        pm = re.match(r"^([A-Za-z_]\w*)\s*\((.*)\)$", type_tok, re.S)
        if pm:
            tname, params = pm.group(1), [p.strip() for p in pm.group(2).split(",") if p.strip()]
        tname = tname.upper()
        if tname == "DOUBLE" and i < len(toks) and toks[i].upper() == "PRECISION":
            i += 1
        if tname in ("CHARACTER",) and i < len(toks) and toks[i].upper().startswith("VARYING"):
            tname = "VARCHAR"
            i += 1
        try:
            dtype = map_sql_type(tname, params)
        except ValueError as ex:
            raise exec_error(str(ex), safe=True) from None
        col = Column(name, dtype)
        if tname in ("SERIAL", "BIGSERIAL", "SMALLSERIAL"):
            col.default = ("func", "SNOWFLAKE_ID")
        while i < len(toks):
            w = toks[i].upper()
            if w == "PRIMARY" and i + 1 < len(toks) and toks[i + 1].upper() == "KEY":
                col.pk = True
                col.not_null = True
                i += 2
            elif w == "NOT" and i + 1 < len(toks) and toks[i + 1].upper() == "NULL":
                col.not_null = True
                i += 2
            elif w == "NULL" or w == "UNIQUE":
                i += 1
            elif w in ("AUTO_INCREMENT", "AUTOINCREMENT"):
                col.default = ("func", "SNOWFLAKE_ID")
                i += 1
            elif w == "GENERATED":
                j = i
                while j < len(toks) and toks[j].upper() != "IDENTITY":
                    j += 1
                col.default = ("func", "SNOWFLAKE_ID")
                i = j + 1
            elif w == "DEFAULT" and i + 1 < len(toks):
                col.default = parse_default(toks[i + 1])
                i += 2
            else:
                raise SqlError("INVALID_SQL", f"Invalid SQL: unexpected '{toks[i]}' in column '{name}'")
        col.__post_init__()
        cols.append(col)
    if table_pk:
        for c in cols:
            if c.name == table_pk:
                c.pk = True
                c.not_null = True
    return cols


def parse_options(text: str) -> dict:
    opts = {}
    for part in split_top(text):
        if "=" not in part:
            raise SqlError("INVALID_SQL", f"Invalid SQL: bad table option '{part}'")
        k, v = part.split("=", 1)
        k = k.strip().upper()
        v = v.strip()
        if v[:1] in "'\"":
            v = unq(v)
        elif re.fullmatch(r"-?\d+", v):
            v = int(v)
        elif v.upper() in ("TRUE", "FALSE"):
            v = v.upper() == "TRUE"
        opts[k] = v
    return opts


CREATE_TABLE_RE = re.compile(r"^CREATE\s+(?:(USER|SHARED|STREAM)\s+)?TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(" + IDENT
                             + r"(?:\s*\.\s*" + IDENT + r")?)\s*\(", re.I | re.S)


class CreateTable(Stmt):
    def __init__(self, sql: str):
        m = CREATE_TABLE_RE.match(sql)
        if not m:
            raise SqlError("INVALID_SQL", "Invalid SQL: bad CREATE TABLE")
        self.prefix = (m.group(1) or "").upper() or None
        self.ine = bool(m.group(2))
        parts = [p for p in re.split(r"\s*\.\s*", m.group(3), maxsplit=1)]
        self.ns = norm_ident(parts[0]) if len(parts) == 2 else None
        self.name = norm_ident(parts[-1])
        start = m.end() - 1
        end = matching_paren(sql, start)
        if end < 0:
            raise SqlError("INVALID_SQL", "Invalid SQL: unbalanced parentheses")
        self.columns = parse_column_defs(sql[start + 1:end])
        rest = sql[end + 1:].strip()
        rest = re.sub(r"^USING\s+\w+\s*", "", rest, flags=re.I)
        self.options = {}
        if rest:
            wm = re.match(r"^WITH\s*\(", rest, re.I)
            if not wm:
                raise SqlError("INVALID_SQL", f"Invalid SQL: unexpected '{rest[:40]}'")
            e2 = matching_paren(rest, wm.end() - 1)
            if e2 < 0 or rest[e2 + 1:].strip():
                raise SqlError("INVALID_SQL", "Invalid SQL: bad WITH clause")
            self.options = parse_options(rest[wm.end():e2])

    def run(self, engine, ctx):
        ns = self.ns or (ctx.namespace or "default").lower()
        opts = dict(self.options)
        kind = self.prefix
        tkind = opts.pop("TYPE", None)
        if tkind is not None:
            tkind = str(tkind).upper()
            if kind and tkind != kind:
                raise exec_error(f"Table type conflict: {kind} TABLE with TYPE='{tkind}'", safe=True)
            kind = tkind
        if kind is None:
            kind = "SHARED"
            if ctx.role in ("user", "service") and ns == ctx.subject:
                kind = "USER"
        if kind not in ("USER", "SHARED", "STREAM"):
            raise exec_error(f"Unknown table type '{kind}'", safe=True)
        if kind == "SHARED" and ctx.role not in ("service", "dba", "system"):
            raise perm_denied("creating SHARED tables requires service, dba or system role")
        if ns == "system":
            raise perm_denied("cannot create tables in the system namespace")
        if ns not in engine.store.namespaces:
            raise exec_error(f"Namespace '{ns}' does not exist", safe=True)
        existing = engine.store.tables.get((ns, self.name))
        if existing is not None:
            if self.ine:
                return Result("ddl", 0, f"Table {ns}.{self.name} already exists (skipped)", ctx.subject)
            raise exec_error(f"Table '{ns}.{self.name}' already exists", safe=True)
        pks = [c for c in self.columns if c.pk]
        if kind in ("USER", "SHARED") and len(pks) != 1:
            raise exec_error(f"{kind} tables require exactly one PRIMARY KEY column", safe=True)
        if len(pks) > 1:
            raise exec_error("Composite primary keys are not supported", safe=True)
        if kind == "STREAM" and "TTL_SECONDS" not in opts:
            raise exec_error("STREAM tables require TTL_SECONDS", safe=True)
        names = set()
        for c in self.columns:
            if c.name in ("_seq", "_deleted", "_owner", "_commit_seq"):
                raise exec_error(f"Column name '{c.name}' is reserved", safe=True)
            if c.name in names:
                raise exec_error(f"Duplicate column '{c.name}'", safe=True)
            names.add(c.name)
        if kind == "SHARED":
            lvl = str(opts.get("ACCESS_LEVEL", "PRIVATE")).upper()
            if lvl not in ("PUBLIC", "PRIVATE", "RESTRICTED", "DBA"):
                raise exec_error(f"Invalid ACCESS_LEVEL '{lvl}'", safe=True)
            opts["ACCESS_LEVEL"] = lvl
        elif "ACCESS_LEVEL" in opts:
            raise exec_error("ACCESS_LEVEL is only valid for SHARED tables", safe=True)
        opts["TYPE"] = kind
        cols = [Column(c.name, c.dtype, c.pk, c.not_null, c.default) for c in self.columns]
        t = TableDef(ns, self.name, kind, cols, opts, time.time())
        engine.store.create_table(t)
        return Result("ddl", 0, f"Table {ns}.{self.name} created successfully ({kind})", ctx.subject)


class DropTable(Stmt):
    def __init__(self, ns, name, ie):
        self.ns, self.name, self.ie = ns, name, ie

    def run(self, engine, ctx):
        ns = self.ns or (ctx.namespace or "default").lower()
        t = engine.store.tables.get((ns, self.name))
        if t is None:
            if self.ie:
                return Result("ddl", 0, f"Table {ns}.{self.name} does not exist", ctx.subject)
            raise exec_error(f"Table '{ns}.{self.name}' not found", safe=True)
        if t.kind == "SHARED" and not ctx.is_admin and ctx.role != "service":
            raise perm_denied("dropping SHARED tables requires service, dba or system role")
        engine.live.drop_table(t)
        engine.store.drop_table(t)
        return Result("ddl", 0, f"Table {ns}.{self.name} dropped successfully", ctx.subject)


class CreateUser(Stmt):
    def __init__(self, name, password, role_word, email, ine, kind="password"):
        self.name, self.password, self.role_word, self.email, self.ine = name, password, role_word, email, ine
        self.kind = kind

    def __repr__(self):
        return f"CreateUser({self.name!r}, <password hidden>)"

    def run(self, engine, ctx):
        if not ctx.is_admin:
            raise perm_denied("CREATE USER requires DBA or System role")
        role = ROLE_WORDS.get(self.role_word.lower())
        if role is None:
            raise exec_error(f"Invalid role '{self.role_word}'", safe=True)
        if role == "system" and ctx.role != "system":
            raise perm_denied("only system may create system users")
        if engine.store.live_user(self.name):
            if self.ine:
                return Result("ddl", 0, f"User '{self.name}' already exists", ctx.subject)
            raise exec_error(f"User '{self.name}' already exists", safe=True)
        h = hash_password(self.password) if self.password else ""
        engine.store.put_user(self.name, h, role, self.email)
        return Result("ddl", 0, f"User '{self.name}' created successfully", ctx.subject)


class AlterUser(Stmt):
    def __init__(self, name, what, value):
        self.name, self.what, self.value = name, what, value

    def __repr__(self):
        return f"AlterUser({self.name!r}, {self.what})"

    def run(self, engine, ctx):
        u = engine.store.live_user(self.name)
        if u is None:
            raise exec_error(f"User '{self.name}' not found", safe=True)
        if not ctx.is_admin and not (self.what == "PASSWORD" and ctx.subject == self.name):
            raise perm_denied("ALTER USER requires DBA or System role")
        if self.what == "PASSWORD":
            engine.store.update_user(self.name, password_hash=hash_password(self.value))
        elif self.what == "ROLE":
            role = ROLE_WORDS.get(self.value.lower())
            if role is None:
                raise exec_error(f"Invalid role '{self.value}'", safe=True)
            engine.store.update_user(self.name, role=role)
        else:
            engine.store.update_user(self.name, email=self.value)
        return Result("ddl", 0, f"User '{self.name}' updated successfully", ctx.subject)


class DropUser(Stmt):
    def __init__(self, name, ie):
        self.name, self.ie = name, ie

    def run(self, engine, ctx):
        if not ctx.is_admin:
            raise perm_denied("DROP USER requires DBA or System role")
        if engine.store.live_user(self.name) is None:
            if self.ie:
                return Result("ddl", 0, f"User '{self.name}' does not exist", ctx.subject)
            raise exec_error(f"User '{self.name}' not found", safe=True)
        if self.name == "root":
            raise exec_error("Cannot drop the root user", safe=True)
        engine.store.update_user(self.name, deleted=1)
        return Result("ddl", 0, f"User '{self.name}' dropped successfully", ctx.subject)


class StorageFlush(Stmt):
    def __init__(self, ns, name, all_ns=None, all_=False):
        self.ns, self.name, self.all_ns, self.all = ns, name, all_ns, all_

    def run(self, engine, ctx):
        if ctx.role not in ("service", "dba", "system"):
            raise perm_denied("STORAGE FLUSH requires service, dba or system role")
        if self.all:
            tables = [t for t in engine.store.tables.values()
                      if t.kind != "STREAM" and (self.all_ns is None or t.ns == self.all_ns)]
            engine.store.checkpoint()
            jobs = []
            for t in tables:
                if engine.dirty.pop(t.full_name, None):
                    jobs.append(t.full_name)
            return Result("ddl", 0, f"Storage flush started for {len(jobs)} table(s)", ctx.subject)
        ns = self.ns or (ctx.namespace or "default").lower()
        t = engine.store.tables.get((ns, self.name))
        if t is None:
            raise exec_error(f"Table '{ns}.{self.name}' not found", safe=True)
        if t.kind == "STREAM":
            raise exec_error("STORAGE FLUSH is not supported on STREAM tables", safe=True)
        if not engine.dirty.pop(t.full_name, None):
            return Result("ddl", 0, f"Storage flush skipped: no pending writes for table '{t.full_name}'",
                          ctx.subject)
        engine.store.checkpoint()
        engine.job_counter += 1
        return Result("ddl", 0, f"Storage flush started for table '{t.full_name}'. Job ID: FL-{engine.job_counter:06d}",
                      ctx.subject)


class KillLive(Stmt):
    def __init__(self, live_id):
        self.live_id = live_id

    def run(self, engine, ctx):
        if not ctx.is_admin:
            raise perm_denied("KILL LIVE QUERY requires DBA or System role")
        if not engine.live.kill(self.live_id):
            raise exec_error(f"Live query not found: {self.live_id}", safe=True)
        return Result("ddl", 0, f"Live query killed: {self.live_id}", ctx.subject)


class ExecuteAs(Stmt):
    def __init__(self, target, inner: Stmt):
        self.target, self.inner = target, inner
        self.kind = inner.kind
        self.is_select = inner.is_select
        self.is_dml = inner.is_dml

    def run(self, engine, ctx):
        caller_role = ctx.caller.role
        tu = engine.store.live_user(self.target)
        trole = tu["role"] if tu else "user"
        allowed = {
            "user": (),
            "service": ("service", "user"),
            "dba": ("dba", "service", "user"),
            "system": ("system", "dba", "service", "user", "anonymous"),
        }.get(caller_role, ())
        if self.target != ctx.caller.user_id and trole not in allowed:
            raise perm_denied(f"role {caller_role} cannot execute as user '{self.target}' (role {trole})")
        ctx.subject = self.target
        ctx.role = "user"
        ctx.impersonated = True
        try:
            return self.inner.run(engine, ctx)
        finally:
            ctx.subject = ctx.caller.user_id
            ctx.role = ctx.caller.role
            ctx.impersonated = False


# ---------------------------------------------------------------------------------------- parser
RE_FLAGS = re.I | re.S
R_EXEC_AS = re.compile(r"^EXECUTE\s+AS\s+USER\s+(" + IDENT + r")\s*\((.*)\)\s*$", RE_FLAGS)
R_CREATE_NS = re.compile(r"^CREATE\s+NAMESPACE\s+(IF\s+NOT\s+EXISTS\s+)?(" + IDENT + r")\s*$", RE_FLAGS)
R_DROP_NS = re.compile(r"^DROP\s+NAMESPACE\s+(IF\s+EXISTS\s+)?(" + IDENT + r")(\s+CASCADE)?\s*$", RE_FLAGS)
R_CREATE_USER = re.compile(
    r"^CREATE\s+USER\s+(IF\s+NOT\s+EXISTS\s+)?(" + IDENT + r")\s+WITH\s+(?:PASSWORD\s+('(?:[^']|'')*')|"
    r"(INTERNAL)|OAUTH\s+('(?:[^']|'')*'))\s+ROLE\s+(" + IDENT + r")(?:\s+EMAIL\s+('(?:[^']|'')*'))?\s*$", RE_FLAGS)
R_ALTER_USER = re.compile(r"^ALTER\s+USER\s+(" + IDENT + r")\s+SET\s+(PASSWORD|ROLE|EMAIL)\s+(" + IDENT + r"|'(?:[^']|'')*')\s*$",
                          RE_FLAGS)
R_DROP_USER = re.compile(r"^DROP\s+USER\s+(IF\s+EXISTS\s+)?(" + IDENT + r")\s*$", RE_FLAGS)
R_DROP_TABLE = re.compile(r"^DROP\s+(?:USER\s+|SHARED\s+|STREAM\s+)?TABLE\s+(IF\s+EXISTS\s+)?(" + IDENT + r")(?:\s*\.\s*("
                          + IDENT + r"))?\s*$", RE_FLAGS)
R_FLUSH = re.compile(r"^STORAGE\s+FLUSH\s+TABLE\s+(" + IDENT + r")(?:\s*\.\s*(" + IDENT + r"))?\s*$", RE_FLAGS)
R_FLUSH_ALL = re.compile(r"^STORAGE\s+FLUSH\s+ALL(?:\s+IN\s+(" + IDENT + r"))?\s*$", RE_FLAGS)
R_KILL = re.compile(r"^KILL\s+LIVE\s+QUERY\s+('(?:[^']|'')*'|\S+)\s*$", RE_FLAGS)
R_TXN = re.compile(r"^(BEGIN(?:\s+TRANSACTION)?|START\s+TRANSACTION|COMMIT(?:\s+TRANSACTION)?|ROLLBACK(?:\s+TRANSACTION)?|END)$",
                   re.I)


def _sq(s):
    return unq(s).replace("''", "'")


def parse_statement(sql: str, engine: "Engine") -> Stmt:
    s = sql.strip()
    m = R_TXN.match(s)
    if m:
        w = m.group(1).split()[0].upper()
        return TxnStmt("BEGIN" if w in ("BEGIN", "START") else ("COMMIT" if w in ("COMMIT", "END") else "ROLLBACK"))
    m = R_EXEC_AS.match(s)
    if m:
        inner = parse_statement(m.group(2), engine)
        if isinstance(inner, (ExecuteAs, TxnStmt)) or not (inner.is_dml or inner.is_select):
            raise SqlError("INVALID_SQL", "Invalid SQL: EXECUTE AS USER wraps a single DML or SELECT statement")
        return ExecuteAs(_sq(m.group(1)), inner)
    head = s[:40].upper()
    if head.startswith("CREATE NAMESPACE"):
        m = R_CREATE_NS.match(s)
        if not m:
            raise SqlError("INVALID_SQL", "Invalid SQL: bad CREATE NAMESPACE")
        return CreateNamespace(norm_ident(m.group(2)), bool(m.group(1)))
    if head.startswith("DROP NAMESPACE"):
        m = R_DROP_NS.match(s)
        if not m:
            raise SqlError("INVALID_SQL", "Invalid SQL: bad DROP NAMESPACE")
        return DropNamespace(norm_ident(m.group(2)), bool(m.group(1)), bool(m.group(3)))
    if re.match(r"^CREATE\s+(USER\s+|SHARED\s+|STREAM\s+)?TABLE\b", s, re.I):
        return CreateTable(s)
    if re.match(r"^CREATE\s+USER\b", s, re.I):
        m = R_CREATE_USER.match(s)
        if not m:
            raise SqlError("INVALID_SQL", "Invalid SQL: bad CREATE USER")
        pw = _sq(m.group(3)) if m.group(3) else None
        return CreateUser(unq(m.group(2)), pw, unq(m.group(6)), _sq(m.group(7)) if m.group(7) else None,
                          bool(m.group(1)), "password" if pw is not None else "internal")
    if re.match(r"^ALTER\s+USER\b", s, re.I):
        m = R_ALTER_USER.match(s)
        if not m:
            raise SqlError("INVALID_SQL", "Invalid SQL: bad ALTER USER")
        return AlterUser(unq(m.group(1)), m.group(2).upper(), _sq(m.group(3)))
    if re.match(r"^DROP\s+USER\s+(?!TABLE)", s, re.I):
        m = R_DROP_USER.match(s)
        if not m:
            raise SqlError("INVALID_SQL", "Invalid SQL: bad DROP USER")
        return DropUser(unq(m.group(2)), bool(m.group(1)))
    if re.match(r"^DROP\s+(USER\s+|SHARED\s+|STREAM\s+)?TABLE\b", s, re.I):
        m = R_DROP_TABLE.match(s)
        if not m:
            raise SqlError("INVALID_SQL", "Invalid SQL: bad DROP TABLE")
        if m.group(3):
            return DropTable(norm_ident(m.group(2)), norm_ident(m.group(3)), bool(m.group(1)))
        return DropTable(None, norm_ident(m.group(2)), bool(m.group(1)))
    if head.startswith("STORAGE"):
        m = R_FLUSH.match(s)
        if m:
            if m.group(2):
                return StorageFlush(norm_ident(m.group(1)), norm_ident(m.group(2)))
            return StorageFlush(None, norm_ident(m.group(1)))
        m = R_FLUSH_ALL.match(s)
        if m:
            return StorageFlush(None, None, norm_ident(m.group(1)) if m.group(1) else None, True)
        raise SqlError("INVALID_SQL", "Invalid SQL: bad STORAGE FLUSH")
    if head.startswith("FLUSH"):
        raise SqlError("INVALID_SQL", "Invalid SQL: FLUSH TABLE is not supported; use STORAGE FLUSH TABLE")
    if head.startswith("KILL"):
        m = R_KILL.match(s)
        if not m:
            raise SqlError("INVALID_SQL", "Invalid SQL: bad KILL LIVE QUERY")
        return KillLive(_sq(m.group(1)))
    try:
        ast = sqlglot.parse_one(s)
    except Exception as ex:
        raise SqlError("INVALID_SQL", f"Invalid SQL: {str(ex).splitlines()[0][:200]}") from None
    if isinstance(ast, exp.Select):
        return SelectStmt(ast)
    if isinstance(ast, exp.Insert):
        return InsertStmt(ast, engine)
    if isinstance(ast, exp.Update):
        return UpdateStmt(ast)
    if isinstance(ast, exp.Delete):
        return DeleteStmt(ast)
    raise SqlError("INVALID_SQL", f"Invalid SQL: unsupported statement '{s[:40]}'")


# ---------------------------------------------------------------------------------------- engine
class SysView:
    """A system.* view materialised into a TEMP table before each query."""

    kind = "SYSTEM"
    access_level = "DBA"

    def __init__(self, name, columns: list[Column]):
        self.ns, self.name = "system", name
        self.full_name = f"system.{name}"
        self.columns = columns
        self.all_cols = columns
        self.colmap = {c.name: c for c in columns}
        self.pk = next((c for c in columns if c.pk), None)
        self.phys = f"sys_{name}"


def _cols(spec):
    out = []
    for s in spec:
        name, dtype = s[0], s[1]
        out.append(Column(name, dtype, pk=len(s) > 2 and s[2] == "pk", not_null=len(s) > 2))
    return out


SYS_VIEWS = {
    "live": _cols([("live_id", "Text", "pk"), ("connection_id", "Text", "nn"), ("subscription_id", "Text", "nn"),
                   ("namespace_id", "Text", "nn"), ("table_name", "Text", "nn"), ("user_id", "Text", "nn"),
                   ("query", "Text", "nn"), ("options", "Json"), ("status", "Text", "nn"),
                   ("created_at", "Timestamp", "nn"), ("last_update", "Timestamp", "nn"),
                   ("changes", "BigInt", "nn"), ("node_id", "BigInt", "nn"), ("last_ping_at", "Timestamp", "nn")]),
    "stats": _cols([("metric_name", "Text", "pk"), ("metric_value", "Text", "nn")]),
    "settings": _cols([("name", "Text", "pk"), ("value", "Text", "nn"), ("description", "Text"),
                       ("category", "Text")]),
    "users": _cols([("user_id", "Text", "pk"), ("role", "Text", "nn"), ("email", "Text"), ("created_at", "Text"),
                    ("updated_at", "Text"), ("deleted", "Boolean", "nn")]),
    "namespaces": _cols([("namespace_id", "Text", "pk"), ("created_at", "Timestamp")]),
    "tables": _cols([("table_id", "Text", "pk"), ("namespace_id", "Text", "nn"), ("table_name", "Text", "nn"),
                     ("table_type", "Text", "nn"), ("options", "Json"), ("created_at", "Timestamp")]),
}


class Engine:
    def __init__(self, store, settings, faults, live=None, stats_provider=None):
        self.store = store
        self.settings = settings
        self.faults = faults
        self.live = live
        self.stats_provider = stats_provider
        self.cache: dict[str, list] = {}
        self.views = {k: SysView(k, v) for k, v in SYS_VIEWS.items()}
        self.dirty: dict[str, bool] = {}
        self.job_counter = 0
        self.dml_count = 0

    def system_view(self, name):
        return self.views.get(name)

    # -------------------------------------------------------------- parsing
    def prepare(self, sql: str) -> list[Stmt]:
        stmts = self.cache.get(sql)
        if stmts is not None:
            return stmts
        if not sql.strip():
            raise SqlError("EMPTY_SQL", "SQL query cannot be empty")
        if len(sql) > 1024 * 1024:
            raise SqlError("INVALID_SQL", "SQL query exceeds maximum length of 1 MiB")
        texts = split_statements(sql)
        if not texts:
            raise SqlError("EMPTY_SQL", "SQL query cannot be empty")
        out = []
        for i, t in enumerate(texts):
            try:
                out.append(parse_statement(t, self))
            except SqlError as ex:
                if len(texts) > 1:
                    ex = SqlError(ex.code if ex.code != "INVALID_SQL" else "BATCH_PARSE_ERROR",
                                  f"Statement {i + 1} failed: {ex.message}", ex.status, ex.safe)
                raise ex from None
        if len(self.cache) > 4000:
            self.cache.clear()
        self.cache[sql] = out
        return out

    # -------------------------------------------------------------- helpers
    def map_sqlite_error(self, ex: Exception) -> SqlError:
        msg = str(ex)
        m = re.match(r"no such column: (.*)", msg)
        if m:
            return exec_error(f"Schema error: No field named {m.group(1).split('.')[-1]}", safe=True)
        if "binding parameter" in msg or "supply a value" in msg:
            return exec_error(f"Parameter error: {msg}", safe=True)
        return exec_error(f"Execution error: {msg}")

    def select_result(self, schema, rows, ctx: Ctx, t) -> Result:
        cats = []
        out_schema = []
        for i, (name, dtype, flags) in enumerate(schema):
            if dtype is None:
                v = next((r[i] for r in rows if r[i] is not None), None)
                dtype = infer_dtype(v) if v is not None else "Text"
            from .types import category_of
            cats.append(category_of(dtype))
            f = {"name": name, "data_type": dtype, "index": i}
            if flags:
                f["flags"] = flags
            out_schema.append(f)
        enc_rows = []
        for r in rows:
            enc_rows.append([encode(c, v) if c in ("int64", "bool", "bytes") else v for c, v in zip(cats, r)])
        return Result("select", len(enc_rows), None, ctx.subject, out_schema, enc_rows)

    def materialize(self, v: SysView):
        rows = self.view_rows(v.name)
        db = self.store.db
        db.execute(f"DROP TABLE IF EXISTS temp.{v.phys}")
        db.execute(f"CREATE TEMP TABLE {v.phys} ({', '.join(qi(c.name) for c in v.columns)})")
        if rows:
            db.executemany(f"INSERT INTO temp.{v.phys} VALUES ({', '.join('?' * len(v.columns))})", rows)

    def view_rows(self, name):
        if name == "live":
            return self.live.live_rows() if self.live else []
        if name == "stats":
            return list(self.stats_provider()) if self.stats_provider else []
        if name == "settings":
            return [(n, v, "", c) for n, v, c in self.settings.public_items()]
        if name == "users":
            return [(u["id"], u["role"], u["email"], u["created_at"], u["updated_at"], int(bool(u["deleted"])))
                    for u in self.store.users.values()]
        if name == "namespaces":
            return [(n, int(c * 1e6) if c else None) for n, c in self.store.namespaces.items()]
        if name == "tables":
            return [(t.full_name, t.ns, t.name, t.kind, orjson.dumps(t.options).decode(), int(t.created_at * 1e6))
                    for t in self.store.tables.values()]
        return []

    # -------------------------------------------------------------- execution
    def execute(self, session: Session, stmts: list[Stmt], params: dict, namespace: str) -> list[Result]:
        """Runs statements; raises SqlError. Notifications are dispatched after each commit."""
        ctx = Ctx(session, params, namespace or "default")
        db = self.store.db
        results = []
        in_txn = False
        txn_start = 0
        multi = len(stmts) > 1
        try:
            for i, st in enumerate(stmts):
                if isinstance(st, TxnStmt):
                    if st.op == "BEGIN":
                        if in_txn:
                            raise exec_error("Transaction already open", safe=True)
                        db.execute("BEGIN")
                        in_txn = True
                        txn_start = len(results)
                    elif st.op == "COMMIT":
                        if in_txn:
                            db.execute("COMMIT")
                            in_txn = False
                            self.flush_pending(ctx)
                    else:
                        if in_txn:
                            db.execute("ROLLBACK")
                            in_txn = False
                            ctx.pending.clear()
                            results[txn_start:] = [r for r in results[txn_start:] if r.kind != "dml"]
                    continue
                try:
                    r = st.run(self, ctx)
                except SqlError as ex:
                    if multi:
                        raise SqlError(ex.code, f"Statement {i + 1} failed: {ex.message}", ex.status, ex.safe) from None
                    raise
                except sqlite3.Error as ex:
                    e2 = self.map_sqlite_error(ex)
                    if multi:
                        e2.message = f"Statement {i + 1} failed: {e2.message}"
                    raise e2 from None
                results.append(r)
                if st.is_dml:
                    self.after_dml(ctx, in_txn)
            if in_txn:
                db.execute("ROLLBACK")
                in_txn = False
                ctx.pending.clear()
                raise exec_error("Transaction left open at the end of the request; rolled back", safe=True)
        finally:
            if in_txn:
                db.execute("ROLLBACK")
                ctx.pending.clear()
        return results

    def after_dml(self, ctx: Ctx, in_txn: bool):
        self.dml_count += 1
        f = self.faults
        if f.crash_after:
            f.writes_since_set += 1
            if f.writes_since_set >= f.crash_after:
                os._exit(CRASH_EXIT_CODE)
        if not in_txn:
            self.flush_pending(ctx)

    def flush_pending(self, ctx: Ctx):
        pend = ctx.pending
        if not pend:
            return
        ctx.pending = []
        live = self.live
        for p in pend:
            self.dirty[p[0].full_name] = True
            if live is not None:
                live.notify(*p)
