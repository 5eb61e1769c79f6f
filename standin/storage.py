"""SQLite storage: catalog (users, namespaces, tables) and one SQLite table per KalamDB table.

Each KalamDB table keeps only the latest version of each row: `_seq` (snowflake), `_deleted`
(soft-delete tombstone) and `_owner` (USER/STREAM row owner, '' for SHARED) are stored beside the
user columns, primary key (_owner, pk).
"""
from __future__ import annotations

import datetime as _dt
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field

import orjson

from .types import AFFINITY, category_of, from_sqlite

SEQ_EPOCH_MS = 1704067200000
WORKER_ID = 1


def rfc3339(ts: float | None = None) -> str:
    d = _dt.datetime.fromtimestamp(ts if ts is not None else time.time(), tz=_dt.timezone.utc)
    return d.isoformat(timespec="milliseconds")


def seq_time_ms(seq: int) -> int:
    """Commit time (Unix ms) a `_seq` carries."""
    return (seq >> 22) + SEQ_EPOCH_MS


class SeqGen:
    """One snowflake generator for the whole server: 41-bit ms since 2024-01-01, 10-bit worker, 12-bit seq."""

    def __init__(self, floor: int = 0):
        self.last_ms = 0
        self.counter = 0
        self.last = 0
        if floor:
            self.last_ms = (floor >> 22)
            self.counter = floor & 0xFFF
            self.last = floor

    def next(self) -> int:
        ms = int(time.time() * 1000) - SEQ_EPOCH_MS
        if ms > self.last_ms:
            self.last_ms = ms
            self.counter = 0
        else:
            self.counter += 1
            if self.counter > 0xFFF:
                self.last_ms += 1
                self.counter = 0
        v = (self.last_ms << 22) | (WORKER_ID << 12) | self.counter
        self.last = v
        return v


@dataclass
class Column:
    name: str
    dtype: object
    pk: bool = False
    not_null: bool = False
    default: tuple | None = None  # ("func", NAME) or ("lit", value)
    cat: str = ""

    def __post_init__(self):
        self.cat = category_of(self.dtype)

    def to_json(self):
        return {"name": self.name, "dtype": self.dtype, "pk": self.pk, "not_null": self.not_null,
                "default": list(self.default) if self.default else None}

    def flags(self):
        if self.pk:
            return ["pk", "nn", "uq"]
        if self.not_null:
            return ["nn"]
        return None


SEQ_COL = Column("_seq", "BigInt", not_null=True)
DELETED_COL = Column("_deleted", "Boolean", not_null=True)


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(eq=False)
class TableDef:
    ns: str
    name: str
    kind: str  # SHARED | USER | STREAM
    columns: list[Column]
    options: dict
    created_at: float = 0.0
    # derived
    phys: str = ""
    pk: Column | None = None
    colmap: dict = field(default_factory=dict)
    all_cols: list[Column] = field(default_factory=list)  # user cols + _seq + _deleted
    version: int = 0  # bumps when recreated

    def __post_init__(self):
        self.phys = f"d_{self.ns}__{self.name}"
        self.pk = next((c for c in self.columns if c.pk), None)
        self.all_cols = list(self.columns) + [SEQ_COL, DELETED_COL]
        self.colmap = {c.name: c for c in self.all_cols}
        self.bool_cols = [c.name for c in self.columns if c.cat == "bool"]
        names = [c.name for c in self.columns] + ["_seq", "_deleted"]
        self.select_list = ", ".join(qi(n) for n in names)
        self.insert_sql = (f"INSERT INTO {qi(self.phys)} ({', '.join(qi(c.name) for c in self.columns)}, "
                           f"_seq, _deleted, _owner) VALUES ({', '.join('?' * (len(self.columns) + 3))})")
        self.access_level = str(self.options.get("ACCESS_LEVEL", "PRIVATE")).upper()

    @property
    def full_name(self):
        return f"{self.ns}.{self.name}"

    def row_from_sqlite(self, names: list[str], tup) -> dict:
        d = dict(zip(names, tup))
        for n in self.bool_cols:
            v = d.get(n)
            if v is not None:
                d[n] = bool(v)
        if "_deleted" in d:
            d["_deleted"] = bool(d["_deleted"])
        return d


class Store:
    def __init__(self, path: str):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=1024)
        self.lock = threading.RLock()
        db = self.db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA case_sensitive_like=ON")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("CREATE TABLE IF NOT EXISTS _meta_users (id TEXT PRIMARY KEY, password_hash TEXT NOT NULL, "
                   "role TEXT NOT NULL, email TEXT, created_at TEXT, updated_at TEXT, deleted INTEGER DEFAULT 0, "
                   "failed INTEGER DEFAULT 0, locked_until REAL DEFAULT 0)")
        db.execute("CREATE TABLE IF NOT EXISTS _meta_namespaces (name TEXT PRIMARY KEY, created_at REAL)")
        db.execute("CREATE TABLE IF NOT EXISTS _meta_tables (ns TEXT, name TEXT, kind TEXT, columns TEXT, "
                   "options TEXT, created_at REAL, PRIMARY KEY (ns, name))")
        self.users: dict[str, dict] = {}
        for row in db.execute("SELECT id, password_hash, role, email, created_at, updated_at, deleted, failed, "
                              "locked_until FROM _meta_users"):
            self.users[row[0]] = dict(zip(("id", "password_hash", "role", "email", "created_at", "updated_at",
                                           "deleted", "failed", "locked_until"), row))
        self.namespaces: dict[str, float] = dict(db.execute("SELECT name, created_at FROM _meta_namespaces"))
        if "default" not in self.namespaces:
            self.create_namespace("default")
        self.tables: dict[tuple[str, str], TableDef] = {}
        self.catalog_version = 0
        max_seq = 0
        for ns, name, kind, cols, opts, created in db.execute("SELECT * FROM _meta_tables").fetchall():
            columns = []
            for c in orjson.loads(cols):
                columns.append(Column(c["name"], c["dtype"], c["pk"], c["not_null"],
                                      tuple(c["default"]) if c["default"] else None))
            t = TableDef(ns, name, kind, columns, orjson.loads(opts), created)
            self.tables[(ns, name)] = t
            m = db.execute(f"SELECT MAX(_seq) FROM {qi(t.phys)}").fetchone()[0]
            if m and m > max_seq:
                max_seq = m
        self.seq = SeqGen(max_seq)

    # ------------------------------------------------------------------ users
    def put_user(self, uid: str, password_hash: str, role: str, email: str | None):
        now = rfc3339()
        prev = self.users.get(uid)
        created = prev["created_at"] if prev else now
        self.db.execute("INSERT OR REPLACE INTO _meta_users (id, password_hash, role, email, created_at, updated_at, "
                        "deleted, failed, locked_until) VALUES (?,?,?,?,?,?,0,0,0)",
                        (uid, password_hash, role, email, created, now))
        self.users[uid] = {"id": uid, "password_hash": password_hash, "role": role, "email": email,
                           "created_at": created, "updated_at": now, "deleted": 0, "failed": 0, "locked_until": 0}

    def update_user(self, uid: str, **kw):
        u = self.users[uid]
        u.update(kw)
        u["updated_at"] = rfc3339()
        self.db.execute("UPDATE _meta_users SET password_hash=?, role=?, email=?, updated_at=?, deleted=?, failed=?, "
                        "locked_until=? WHERE id=?", (u["password_hash"], u["role"], u["email"], u["updated_at"],
                                                      u["deleted"], u["failed"], u["locked_until"], uid))

    def note_login_attempt(self, uid: str, failed: int, locked_until: float):
        u = self.users[uid]
        u["failed"] = failed
        u["locked_until"] = locked_until
        self.db.execute("UPDATE _meta_users SET failed=?, locked_until=? WHERE id=?", (failed, locked_until, uid))

    def live_user(self, uid: str) -> dict | None:
        u = self.users.get(uid)
        if u is None or u["deleted"]:
            return None
        return u

    # ------------------------------------------------------------------ namespaces
    def create_namespace(self, name: str):
        now = time.time()
        self.db.execute("INSERT INTO _meta_namespaces (name, created_at) VALUES (?, ?)", (name, now))
        self.namespaces[name] = now

    def drop_namespace(self, name: str):
        for key in [k for k in self.tables if k[0] == name]:
            self.drop_table(self.tables[key])
        self.db.execute("DELETE FROM _meta_namespaces WHERE name=?", (name,))
        self.namespaces.pop(name, None)

    # ------------------------------------------------------------------ tables
    def create_table(self, t: TableDef):
        coldefs = [f"{qi(c.name)} {AFFINITY[c.cat]}" for c in t.columns]
        coldefs += ["_seq INTEGER NOT NULL", "_deleted INTEGER NOT NULL DEFAULT 0", "_owner TEXT NOT NULL DEFAULT ''"]
        if t.pk is not None:
            coldefs.append(f"PRIMARY KEY (_owner, {qi(t.pk.name)})")
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute(f"CREATE TABLE {qi(t.phys)} ({', '.join(coldefs)})")
            db.execute(f"CREATE INDEX {qi(t.phys + '__seq')} ON {qi(t.phys)} (_owner, _seq)")
            db.execute("INSERT INTO _meta_tables VALUES (?,?,?,?,?,?)",
                       (t.ns, t.name, t.kind, orjson.dumps([c.to_json() for c in t.columns]).decode(),
                        orjson.dumps(t.options).decode(), t.created_at))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.tables[(t.ns, t.name)] = t
        self.catalog_version += 1

    def drop_table(self, t: TableDef):
        self.db.execute(f"DROP TABLE IF EXISTS {qi(t.phys)}")
        self.db.execute("DELETE FROM _meta_tables WHERE ns=? AND name=?", (t.ns, t.name))
        self.tables.pop((t.ns, t.name), None)
        self.catalog_version += 1

    # ------------------------------------------------------------------ misc
    def checkpoint(self) -> tuple:
        return self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def storage_figures(self) -> dict:
        db = self.db
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        page_count = db.execute("PRAGMA page_count").fetchone()[0]
        freelist = db.execute("PRAGMA freelist_count").fetchone()[0]
        cache_size = db.execute("PRAGMA cache_size").fetchone()[0]
        try:
            wal = os.path.getsize(self.path + "-wal")
        except OSError:
            wal = 0
        try:
            main = os.path.getsize(self.path)
        except OSError:
            main = 0
        # page-cache memory, estimated: the cache holds at most cache_size pages (negative = KiB) and
        # never more than the database has; what S9 reads as the storage engine's memory
        cache_pages = cache_size if cache_size >= 0 else (-cache_size * 1024) // max(1, page_size)
        return {
            "sqlite_page_cache_mem_bytes": min(page_count, cache_pages) * page_size,
            "sqlite_page_size_bytes": page_size,
            "sqlite_page_count": page_count,
            "sqlite_freelist_pages": freelist,
            "sqlite_db_size_bytes": page_size * page_count,
            "sqlite_db_file_bytes": main,
            "sqlite_wal_file_bytes": wal,
            "sqlite_cache_size_setting": cache_size,
            "sqlite_version": sqlite3.sqlite_version,
        }

    def close(self):
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self.db.close()


__all__ = ["Store", "TableDef", "Column", "SeqGen", "seq_time_ms", "qi", "rfc3339", "from_sqlite", "SEQ_COL", "DELETED_COL"]
