"""Fault injection state (docs/architecture.md, fault table)."""
from __future__ import annotations

import hashlib
import random
import threading
import time

# key -> parser
def _prob(v):
    f = float(v)
    if not 0.0 <= f <= 1.0:
        raise ValueError("must be in 0..1")
    return f


def _nonneg_int(v):
    if isinstance(v, bool):
        raise ValueError("must be an integer")
    i = int(v)
    if isinstance(v, float) and v != i:
        raise ValueError("must be an integer")
    if i < 0:
        raise ValueError("must be >= 0")
    return i


def _int(v):
    if isinstance(v, bool):
        raise ValueError("must be an integer")
    i = int(v)
    if isinstance(v, float) and v != i:
        raise ValueError("must be an integer")
    return i


def _nonneg_float(v):
    f = float(v)
    if f < 0:
        raise ValueError("must be >= 0")
    return f


def _bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return bool(v)
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be a boolean")


def _change_type(v):
    s = str(v).strip().lower()
    if s not in ("insert", "update", "delete"):
        raise ValueError("must be insert, update or delete")
    return s


def _str(v):
    return str(v)


PARSERS = {
    "seed": _int,
    "drop": _prob,
    "drop_change_type": _change_type,
    "drop_user": _str,
    "drop_subscription": _str,
    "duplicate": _prob,
    "reorder": _nonneg_int,
    "delay_ms": _nonneg_float,
    "jitter_ms": _nonneg_float,
    "disconnect_every": _nonneg_int,
    "corrupt": _prob,
    "counter_skew": _int,
    "leak_bytes_per_change": _nonneg_int,
    "cpu_burn": _prob,
    "stall_subscription": _str,
    "zombies": _bool,
    "slow_select_ms": _nonneg_float,
    "crash_after_writes": _nonneg_int,
    "cross_user": _prob,
}


class FaultError(ValueError):
    pass


def parse_faults(d: dict) -> dict:
    out = {}
    if not isinstance(d, dict):
        raise FaultError("faults must be a JSON object")
    for k, v in d.items():
        if k not in PARSERS:
            raise FaultError(f"unknown fault key: {k}")
        if v is None:
            continue
        try:
            out[k] = PARSERS[k](v)
        except (TypeError, ValueError) as e:
            raise FaultError(f"bad value for {k}: {e}") from None
    return out


def parse_cli_fault(s: str) -> tuple[str, object]:
    if "=" not in s:
        raise FaultError(f"--fault expects KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    k = k.strip()
    if k not in PARSERS:
        raise FaultError(f"unknown fault key: {k}")
    try:
        return k, PARSERS[k](v.strip())
    except (TypeError, ValueError) as e:
        raise FaultError(f"bad value for {k}: {e}") from None  # the same words as the admin route's


class Faults:
    """Current fault settings plus the derived state the server needs."""

    def __init__(self, initial: dict | None = None, seed: int | None = None):
        self.values: dict = {}
        self.rng = random.Random(seed)
        self.base_seed = seed
        self.writes_since_set = 0
        self.leak: list[bytearray] = []
        self.leaked_bytes = 0
        self._burn_thread: threading.Thread | None = None
        self._burn_fraction = 0.0
        self.on_change = None  # callback(old, new)
        self.replace(initial or {})

    # ------------------------------------------------------------------ updates
    def replace(self, new: dict):
        new = parse_faults(new)
        old = self.values
        self.values = new
        self._derive(old)

    def patch(self, upd: dict):
        if not isinstance(upd, dict):
            raise FaultError("faults must be a JSON object")
        merged = dict(self.values)
        for k, v in upd.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        self.replace(merged)

    def _derive(self, old: dict):
        v = self.values
        if "seed" in v and v.get("seed") != old.get("seed"):
            self.rng.seed(v["seed"])
        if v.get("crash_after_writes") != old.get("crash_after_writes"):
            self.writes_since_set = 0
        self.drop = v.get("drop", 0.0)
        self.duplicate = v.get("duplicate", 0.0)
        self.corrupt = v.get("corrupt", 0.0)
        self.change_type = v.get("drop_change_type")
        self.f_user = v.get("drop_user")
        self.f_sub = v.get("drop_subscription")
        self.reorder = v.get("reorder", 0)
        self.delay_ms = v.get("delay_ms", 0.0)
        self.jitter_ms = v.get("jitter_ms", 0.0)
        self.disconnect_every = v.get("disconnect_every", 0)
        self.counter_skew = v.get("counter_skew", 0)
        self.leak_bytes = v.get("leak_bytes_per_change", 0)
        self.stall_sub = v.get("stall_subscription")
        self.zombies = bool(v.get("zombies", False))
        self.slow_select_ms = v.get("slow_select_ms", 0.0)
        self.crash_after = v.get("crash_after_writes", 0)
        self.cross_user = v.get("cross_user", 0.0)
        # any fault touching the notification path -> slow path
        self.delivery_active = bool(
            self.drop or self.duplicate or self.corrupt or self.reorder or self.delay_ms
            or self.jitter_ms or self.stall_sub is not None
        )
        self._set_burn(v.get("cpu_burn", 0.0))
        if self.on_change:
            self.on_change(old, v)

    def as_dict(self) -> dict:
        return dict(self.values)

    # ------------------------------------------------------------------ predicates
    def targets(self, user_id: str, sub_id: str) -> bool:
        """drop_user / drop_subscription restriction (applies to drop, duplicate, corrupt, delay)."""
        if self.f_user is not None and not user_id.startswith(self.f_user):
            return False
        if self.f_sub is not None and sub_id != self.f_sub:
            return False
        return True

    def type_ok(self, change_type: str) -> bool:
        return self.change_type is None or self.change_type == change_type

    def note_change(self):
        if self.leak_bytes:
            self.leak.append(bytearray(self.leak_bytes))
            self.leaked_bytes += self.leak_bytes

    # ------------------------------------------------------------------ cpu burn
    def _set_burn(self, fraction: float):
        self._burn_fraction = fraction
        if fraction > 0 and (self._burn_thread is None or not self._burn_thread.is_alive()):
            t = threading.Thread(target=self._burn_loop, name="standin-cpu-burn", daemon=True)
            self._burn_thread = t
            t.start()

    def _burn_loop(self):
        # hashlib releases the GIL for large buffers, so this burns CPU without stalling the loop.
        buf = b"\0" * (256 * 1024)
        period = 0.05
        while True:
            f = self._burn_fraction
            if f <= 0:
                time.sleep(0.1)
                continue
            start = time.perf_counter()
            busy_until = start + period * f
            while time.perf_counter() < busy_until:
                hashlib.sha256(buf).digest()
            rest = period - (time.perf_counter() - start)
            if rest > 0:
                time.sleep(rest)
