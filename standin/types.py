"""KalamDB column types: names, SQLite storage, JSON encoding (protocol §3.2 value table)."""
from __future__ import annotations

import datetime as _dt
import decimal

import orjson

# category -> (sqlite affinity)
AFFINITY = {
    "int64": "INTEGER", "int": "INTEGER", "float": "REAL", "bool": "INTEGER", "ts": "INTEGER",
    "date": "INTEGER", "text": "TEXT", "json": "TEXT", "decimal": "TEXT", "bytes": "BLOB",
}

# KalamDB data_type (serde form) -> category
DTYPE_CATEGORY = {
    "BigInt": "int64", "Int": "int", "SmallInt": "int", "Double": "float", "Float": "float",
    "Boolean": "bool", "Timestamp": "ts", "DateTime": "ts", "Date": "date", "Time": "int64",
    "Text": "text", "Uuid": "text", "Json": "json", "File": "text", "Bytes": "bytes",
}


def category_of(dtype) -> str:
    if isinstance(dtype, dict):
        if "Decimal" in dtype:
            return "decimal"
        if "Embedding" in dtype:
            return "json"
        return "text"
    return DTYPE_CATEGORY.get(dtype, "text")


def map_sql_type(name: str, params: list) -> object:
    """sqlglot DataType name (upper) -> KalamDB data_type (serde form)."""
    n = name.upper()
    if n in ("BIGINT", "INT8", "LONG", "BIGSERIAL", "SERIAL", "UBIGINT"):
        return "BigInt"
    if n in ("INT", "INTEGER", "INT4", "UINT", "MEDIUMINT", "SMALLSERIAL"):
        return "Int"
    if n in ("SMALLINT", "TINYINT", "INT2", "USMALLINT", "UTINYINT"):
        return "SmallInt"
    if n in ("DOUBLE", "DOUBLE PRECISION", "FLOAT8", "DOUBLE_PRECISION"):
        return "Double"
    if n in ("FLOAT", "REAL", "FLOAT4"):
        return "Float"
    if n in ("BOOLEAN", "BOOL"):
        return "Boolean"
    if n in ("TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMPLTZ"):
        return "Timestamp"
    if n == "DATETIME":
        return "DateTime"
    if n == "DATE":
        return "Date"
    if n in ("TIME", "TIMETZ"):
        return "Time"
    if n in ("JSON", "JSONB"):
        return "Json"
    if n == "UUID":
        return "Uuid"
    if n in ("BYTES", "BLOB", "BYTEA", "BINARY", "VARBINARY"):
        return "Bytes"
    if n in ("DECIMAL", "NUMERIC", "BIGDECIMAL"):
        p = int(params[0]) if params else 38
        s = int(params[1]) if len(params) > 1 else 10
        return {"Decimal": {"precision": p, "scale": s}}
    if n == "FILE":
        return "File"
    if n == "EMBEDDING":
        return {"Embedding": int(params[0]) if params else 0}
    if n in ("TEXT", "VARCHAR", "CHAR", "STRING", "NVARCHAR", "NCHAR", "CHARACTER VARYING", "NAME"):
        return "Text"
    raise ValueError(f"Unsupported data type: {name}")


class CoerceError(ValueError):
    pass


def _parse_ts(s: str) -> int:
    t = s.strip().replace(" ", "T", 1) if "T" not in s and " " in s.strip() else s.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    try:
        d = _dt.datetime.fromisoformat(t)
    except ValueError:
        raise CoerceError(f"Cannot cast '{s}' to Timestamp") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.timestamp() * 1_000_000)


def coerce(cat: str, v, col: str = ""):
    """Python/JSON value -> stored value for this category (None stays None)."""
    if v is None:
        return None
    try:
        if cat in ("int64", "int"):
            if isinstance(v, bool):
                return int(v)
            if isinstance(v, int):
                return v
            if isinstance(v, float):
                if v != int(v):
                    raise CoerceError(f"Cannot cast {v} to integer for column '{col}'")
                return int(v)
            if isinstance(v, str):
                return int(v.strip())
        elif cat == "float":
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
            if isinstance(v, str):
                return float(v)
        elif cat == "bool":
            if isinstance(v, bool):
                return v
            if isinstance(v, int):
                return v != 0
            if isinstance(v, str):
                s = v.strip().lower()
                if s in ("true", "t", "1"):
                    return True
                if s in ("false", "f", "0"):
                    return False
        elif cat == "ts":
            if isinstance(v, bool):
                raise CoerceError("bool")
            if isinstance(v, (int, float)):
                return int(v)
            if isinstance(v, str):
                s = v.strip()
                if s.lstrip("-").isdigit():
                    return int(s)
                return _parse_ts(s)
        elif cat == "date":
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            if isinstance(v, str):
                d = _dt.date.fromisoformat(v.strip())
                return (d - _dt.date(1970, 1, 1)).days
        elif cat == "text":
            if isinstance(v, str):
                return v
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (int, float)):
                return str(v)
        elif cat == "json":
            if isinstance(v, str):
                return v
            return orjson.dumps(v).decode()
        elif cat == "decimal":
            if isinstance(v, bool):
                raise CoerceError("bool")
            return str(decimal.Decimal(str(v)))
        elif cat == "bytes":
            if isinstance(v, (bytes, bytearray)):
                return bytes(v)
            if isinstance(v, str):
                return v.encode()
            if isinstance(v, list):
                return bytes(v)
    except CoerceError:
        raise
    except (ValueError, TypeError, ArithmeticError):
        pass
    raise CoerceError(f"Cannot cast value {v!r} to the type of column '{col}'")


def from_sqlite(cat: str, v):
    """stored value -> logical Python value (bools become bool)."""
    if v is None:
        return None
    if cat == "bool":
        return bool(v)
    return v


def encode(cat: str, v):
    """logical Python value -> JSON value (BigInt as string etc.)."""
    if v is None:
        return None
    if cat == "int64":
        return str(v)
    if cat == "bool":
        return bool(v)
    if cat == "bytes":
        return list(v)
    return v


def infer_dtype(v) -> str:
    if isinstance(v, bool):
        return "Boolean"
    if isinstance(v, int):
        return "BigInt"
    if isinstance(v, float):
        return "Double"
    if isinstance(v, (bytes, bytearray)):
        return "Bytes"
    return "Text"
