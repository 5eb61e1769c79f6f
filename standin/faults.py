"""Fault injection state (docs/architecture.md, fault table)."""
from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time

log = logging.getLogger("standin.faults")
CRASH_EXIT_CODE = 70  # crash_after_writes and crash_at: os._exit, no clean close

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


def _scope(v):
    """USER/SUBSCRIPTION_ID: one listener's one subscription. USER is a user id, or a prefix when it
    ends with `*` (`*` alone: any user); SUBSCRIPTION_ID is exact. Split at the first `/` (user ids have
    none; a subscription id may)."""
    s = str(v).strip()
    user, sep, sid = s.partition("/")
    if not sep or not user or not sid:
        raise ValueError("must be USER/SUBSCRIPTION_ID")
    if "*" in user[:-1]:
        raise ValueError("`*` may only end USER")
    return s


PARSERS = {
    "seed": _int,
    "scope": _scope,
    "drop": _prob,
    "drop_count": _nonneg_int,
    "drop_change_type": _change_type,
    "drop_user": _str,
    "drop_subscription": _str,
    "duplicate": _prob,
    "duplicate_count": _nonneg_int,
    "reorder": _nonneg_int,
    "delay_ms": _nonneg_float,
    "jitter_ms": _nonneg_float,
    "disconnect_every": _nonneg_int,
    "corrupt": _prob,
    "corrupt_count": _nonneg_int,
    "counter_skew": _int,
    "leak_bytes_per_change": _nonneg_int,
    "cpu_burn": _prob,
    "stall_subscription": _str,
    "zombies": _bool,
    "slow_select_ms": _nonneg_float,
    "write_capacity": _nonneg_float,
    "crash_after_writes": _nonneg_int,
    "crash_at": _nonneg_float,
    "cross_user": _prob,
    "handover_reorder": _nonneg_int,
    "handover_gap_ms": _nonneg_float,
}


# exact-count faults: how many are left is re-armed to the value whenever the key is given (PUT, or a
# PATCH naming it), and kept across changes to other keys
CHANGE_COUNT_KEYS = ("drop_count", "duplicate_count", "corrupt_count")  # spent per (subscription, change)
COUNT_KEYS = CHANGE_COUNT_KEYS + ("handover_reorder",)  # handover_reorder: spent per resumed subscription
HANDOVER_GAP_MS = 5.0  # KalamDB's transition race: the lower _seq arrives 2-15 ms after the higher one


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
        self.left = dict.fromkeys(COUNT_KEYS, 0)
        # crash_at: a thread timer (it fires even while the event loop is busy or blocked); the start-up
        # faults' clock starts when the server listens (start_clock), the admin route's when set
        self.clock_started = False
        self._crash_timer: threading.Timer | None = None
        self.crash_due: float | None = None  # time.monotonic() of the crash
        self.replace(initial or {})

    # ------------------------------------------------------------------ updates
    def replace(self, new: dict, armed=None):
        """Set the faults to `new`. `armed`: the keys given by the caller (default: every key of `new`),
        whose exact counts start again."""
        parsed = parse_faults(new)
        old = self.values
        self.values = parsed
        self._derive(old, set(parsed) if armed is None else set(armed))

    def patch(self, upd: dict):
        if not isinstance(upd, dict):
            raise FaultError("faults must be a JSON object")
        merged = dict(self.values)
        for k, v in upd.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        self.replace(merged, armed={k for k, v in upd.items() if v is not None})

    def _derive(self, old: dict, armed: set):
        v = self.values
        for k in COUNT_KEYS:
            if k in armed or k not in v:
                self.left[k] = v.get(k, 0)
        if "seed" in v and v.get("seed") != old.get("seed"):
            self.rng.seed(v["seed"])
        if v.get("crash_after_writes") != old.get("crash_after_writes"):
            self.writes_since_set = 0
        if "crash_at" in armed or "crash_at" not in v:
            self._arm_crash()
        self.drop = v.get("drop", 0.0)
        self.duplicate = v.get("duplicate", 0.0)
        self.corrupt = v.get("corrupt", 0.0)
        self.change_type = v.get("drop_change_type")
        self.f_user = v.get("drop_user")
        self.f_sub = v.get("drop_subscription")
        sc = v.get("scope")
        if sc is None:
            self.scope = None
        else:
            user, _, sid = sc.partition("/")
            self.scope = (user[:-1], True, sid) if user.endswith("*") else (user, False, sid)
        self.reorder = v.get("reorder", 0)
        self.delay_ms = v.get("delay_ms", 0.0)
        self.jitter_ms = v.get("jitter_ms", 0.0)
        self.disconnect_every = v.get("disconnect_every", 0)
        self.counter_skew = v.get("counter_skew", 0)
        self.leak_bytes = v.get("leak_bytes_per_change", 0)
        self.stall_sub = v.get("stall_subscription")
        self.zombies = bool(v.get("zombies", False))
        self.slow_select_ms = v.get("slow_select_ms", 0.0)
        self.write_capacity = v.get("write_capacity", 0.0)   # statements/s; standin.server.WriteQueue
        self.crash_after = v.get("crash_after_writes", 0)
        self.cross_user = v.get("cross_user", 0.0)
        # any fault touching the notification path -> slow path
        self.delivery_active = bool(
            self.drop or self.duplicate or self.corrupt or self.reorder or self.delay_ms
            or self.jitter_ms or self.stall_sub is not None or any(v.get(k) for k in CHANGE_COUNT_KEYS)
        )
        self.handover_gap_ms = v.get("handover_gap_ms", HANDOVER_GAP_MS)
        self._set_burn(v.get("cpu_burn", 0.0))
        if self.on_change:
            self.on_change(old, v)

    def as_dict(self) -> dict:
        return dict(self.values)

    # ------------------------------------------------------------------ crash_at
    def start_clock(self):
        """The server listens: the start-up faults' crash_at counts from now."""
        self.clock_started = True
        self._arm_crash()

    def _arm_crash(self):
        if self._crash_timer is not None:
            self._crash_timer.cancel()
            self._crash_timer = None
            self.crash_due = None
        secs = self.values.get("crash_at", 0.0)
        if not secs or not self.clock_started:
            return
        t = threading.Timer(secs, self._crash, args=(secs,))
        t.daemon = True
        t.name = "standin-crash-at"
        self.crash_due = time.monotonic() + secs
        self._crash_timer = t
        t.start()

    @staticmethod
    def _crash(secs):
        log.warning("fault crash_at=%s: exiting with code %d", secs, CRASH_EXIT_CODE)
        os._exit(CRASH_EXIT_CODE)

    # ------------------------------------------------------------------ predicates
    def in_scope(self, user_id: str | None, sub_id: str) -> bool:
        """`scope` restriction: every fault that acts on a subscription or its connection."""
        sc = self.scope
        if sc is None:
            return True
        user, prefix, sid = sc
        if sub_id != sid or user_id is None:
            return False
        return user_id.startswith(user) if prefix else user_id == user

    def conn_in_scope(self, user_id: str | None, sub_ids) -> bool:
        """A connection is in scope when it carries the scoped subscription (disconnect_every)."""
        sc = self.scope
        return sc is None or (sc[2] in sub_ids and self.in_scope(user_id, sc[2]))

    def targets(self, user_id: str, sub_id: str) -> bool:
        """drop_user / drop_subscription / scope restriction (applies to drop, duplicate, corrupt, delay
        and their exact counts)."""
        if self.f_user is not None and not user_id.startswith(self.f_user):
            return False
        if self.f_sub is not None and sub_id != self.f_sub:
            return False
        return self.scope is None or self.in_scope(user_id, sub_id)

    def take(self, key: str) -> bool:
        """One of the exact count `key` (drop_count, ...) if any is left."""
        n = self.left[key]
        if n <= 0:
            return False
        self.left[key] = n - 1
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
            # by this thread's CPU time, not the wall clock: on a busy machine the thread still burns its
            # share of a core, then sleeps the rest of the period
            cpu0 = time.thread_time()
            while time.thread_time() - cpu0 < period * f:
                hashlib.sha256(buf).digest()
            time.sleep(period * (1.0 - f))
