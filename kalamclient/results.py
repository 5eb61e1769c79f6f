"""Decoded HTTP answers: :class:`QueryResult`, :class:`Tokens` and value helpers.

Values are kept exactly as KalamDB sent them: BIGINT (Int64/UInt64, ``_seq``, ``COUNT(*)``)
arrives as a JSON string, DECIMAL as a string, TIMESTAMP as microseconds.  Use :func:`as_int`,
:meth:`QueryResult.typed_rows` or ``dicts(typed=True)`` to get ints for BIGINT columns.
"""

from __future__ import annotations

__all__ = ["QueryResult", "Tokens", "as_int", "INT64_TYPES"]

# data_type values (serde form of KalamDataType) that travel as JSON strings holding an integer.
INT64_TYPES = frozenset({"BigInt", "UInt64", "BIGINT"})


def as_int(value):
    """int of a BIGINT value as KalamDB sends it ("42" → 42); None stays None; ints pass through."""
    if value is None or type(value) is int:
        return value
    if isinstance(value, bool):
        return int(value)
    return int(value)


class QueryResult:
    """One entry of ``results[]`` of ``POST /v1/api/sql``.

    ``rows`` are positional lists ordered by ``schema[].index`` (raw JSON values)."""

    __slots__ = ("schema", "rows", "row_count", "message", "as_user")

    def __init__(self, schema=None, rows=None, row_count=0, message=None, as_user=None):
        self.schema = schema or []
        self.rows = rows or []
        self.row_count = row_count
        self.message = message
        self.as_user = as_user

    @classmethod
    def from_json(cls, obj: dict) -> "QueryResult":
        schema = obj.get("schema") or []
        if len(schema) > 1 and any(f.get("index", i) != i for i, f in enumerate(schema)):
            schema = sorted(schema, key=lambda f: f.get("index", 0))
        rows = obj.get("rows") or []
        row_count = obj.get("row_count")
        if row_count is None:
            row_count = len(rows)
        return cls(schema, rows, row_count, obj.get("message"), obj.get("as_user"))

    @property
    def columns(self) -> list[str]:
        return [f["name"] for f in self.schema]

    def column_types(self) -> dict[str, object]:
        return {f["name"]: f.get("data_type") for f in self.schema}

    def _int_positions(self) -> list[int]:
        return [i for i, f in enumerate(self.schema)
                if isinstance(f.get("data_type"), str) and f["data_type"] in INT64_TYPES]

    def typed_rows(self) -> list[list]:
        """Rows with BIGINT columns converted to int (other values unchanged)."""
        positions = self._int_positions()
        if not positions:
            return [list(r) for r in self.rows]
        out = []
        for r in self.rows:
            r = list(r)
            for i in positions:
                if i < len(r):
                    r[i] = as_int(r[i])
            out.append(r)
        return out

    def dicts(self, typed: bool = False) -> list[dict]:
        """Rows as dicts keyed by column name; ``typed=True`` converts BIGINT columns to int."""
        cols = self.columns
        rows = self.typed_rows() if typed else self.rows
        return [dict(zip(cols, r)) for r in rows]

    def column(self, name: str, typed: bool = False) -> list:
        i = self.columns.index(name)
        vals = [r[i] for r in self.rows]
        if typed and self.schema[i].get("data_type") in INT64_TYPES:
            vals = [as_int(v) for v in vals]
        return vals

    def scalar(self):
        """First cell of the first row (raw), or None when there are no rows."""
        if not self.rows or not self.rows[0]:
            return None
        return self.rows[0][0]

    def scalar_int(self):
        """First cell as int (e.g. ``SELECT COUNT(*)``, which KalamDB sends as a string)."""
        return as_int(self.scalar())

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return (f"QueryResult(columns={self.columns!r}, rows={len(self.rows)}, row_count={self.row_count!r}, "
                f"message={self.message!r}, as_user={self.as_user!r})")


class Tokens:
    """Tokens of a login/refresh.  The secrets never appear in ``repr``/``str``."""

    __slots__ = ("access_token", "refresh_token", "expires_at", "refresh_expires_at", "user", "role",
                 "admin_ui_access")

    def __init__(self, access_token, refresh_token=None, expires_at=None, refresh_expires_at=None,
                 user=None, role=None, admin_ui_access=False):
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.expires_at = expires_at
        self.refresh_expires_at = refresh_expires_at
        self.user = user
        self.role = role
        self.admin_ui_access = admin_ui_access

    @classmethod
    def from_json(cls, obj: dict) -> "Tokens":
        user = obj.get("user") or {}
        return cls(obj["access_token"], obj.get("refresh_token"), obj.get("expires_at"),
                   obj.get("refresh_expires_at"), user.get("id"), user.get("role"),
                   bool(obj.get("admin_ui_access", False)))

    def __repr__(self) -> str:
        return (f"Tokens(user={self.user!r}, role={self.role!r}, expires_at={self.expires_at!r}, "
                f"access_token=<hidden>, refresh_token=<hidden>)")

    __str__ = __repr__
