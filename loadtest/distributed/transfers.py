"""Chunked, acknowledged transfers over Locust's custom messages (``klt:x`` chunks, ``klt:xack``)."""
from __future__ import annotations

import logging
import math
import uuid

import gevent
import gevent.event

from .messages import CHUNK, MAX_TRANSFER

log = logging.getLogger(__name__)


class Transfers:
    """Payloads of any size over Locust custom messages: chunks of CHUNK bytes, one ack per payload.
    The receiver keeps at most MAX_TRANSFER bytes per payload in flight and ignores a payload it
    already completed (the sender may resend after a lost ack)."""

    def __init__(self, runner, on_complete, master: bool):
        self.runner = runner
        self.on_complete = on_complete     # callable(node_id, kind, payload: bytes, meta: dict)
        self.master = master
        self.incoming: dict = {}
        self.done: set = set()
        self.acks: dict = {}
        self.stats = {"bytes_in": 0, "bytes_out": 0, "chunks_in": 0, "chunks_out": 0, "payloads_in": 0,
                      "payloads_out": 0}
        runner.register_message("klt:x", self._on_chunk)
        runner.register_message("klt:xack", self._on_ack)

    def send(self, kind: str, payload: bytes, meta: dict, client_id: str | None = None,
             timeout: float = 60.0, attempts: int = 2) -> bool:
        """Send and wait for the receiver's ack. True when acknowledged."""
        xid = uuid.uuid4().hex
        n = max(1, math.ceil(len(payload) / CHUNK))
        if len(payload) > MAX_TRANSFER:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_TRANSFER}")
        ar = self.acks[xid] = gevent.event.AsyncResult()
        try:
            for attempt in range(attempts):
                for i in range(n):
                    data = {"xid": xid, "kind": kind, "i": i, "n": n, "data": payload[i * CHUNK:(i + 1) * CHUNK],
                            "meta": meta if i == n - 1 else None}
                    self._send("klt:x", data, client_id)
                    self.stats["chunks_out"] += 1
                    self.stats["bytes_out"] += len(data["data"])
                    gevent.sleep(0)  # let heartbeats and other messages through
                try:
                    ar.get(timeout=timeout)
                    self.stats["payloads_out"] += 1
                    return True
                except gevent.Timeout:
                    log.warning("transfer %s (%s, %d bytes) not acknowledged after %.0fs (attempt %d)",
                                xid[:8], kind, len(payload), timeout, attempt + 1)
            return False
        finally:
            self.acks.pop(xid, None)

    def _send(self, msg_type: str, data, client_id):
        if self.master:
            self.runner.send_message(msg_type, data, client_id=client_id)
        else:
            self.runner.send_message(msg_type, data)

    def _on_chunk(self, environment, msg, **_kw):
        d = msg.data
        node = msg.node_id if self.master else "master"
        key = (node, d["xid"])
        self.stats["chunks_in"] += 1
        self.stats["bytes_in"] += len(d["data"])
        if key in self.done:
            if d["i"] == d["n"] - 1:
                self._send("klt:xack", {"xid": d["xid"]}, node if self.master else None)
            return
        st = self.incoming.get(key)
        if st is None:
            if d["n"] * CHUNK > MAX_TRANSFER + CHUNK:
                log.error("refused a %d-chunk payload from %s (limit %d bytes)", d["n"], node, MAX_TRANSFER)
                return
            st = self.incoming[key] = {"parts": {}, "size": 0}
        if d["i"] not in st["parts"]:
            st["parts"][d["i"]] = d["data"]
            st["size"] += len(d["data"])
        if st["size"] > MAX_TRANSFER:
            log.error("payload from %s exceeds %d bytes: dropped", node, MAX_TRANSFER)
            del self.incoming[key]
            return
        if d["meta"] is not None:
            st["meta"] = d["meta"]
        if len(st["parts"]) == d["n"] and "meta" in st:
            del self.incoming[key]
            self.done.add(key)
            payload = b"".join(st["parts"][i] for i in range(d["n"]))
            self.stats["payloads_in"] += 1
            self._send("klt:xack", {"xid": d["xid"]}, node if self.master else None)
            gevent.spawn(self._complete, node, d["kind"], payload, st["meta"])

    def _complete(self, node, kind, payload, meta):
        try:
            self.on_complete(node, kind, payload, meta)
        except Exception:
            log.exception("handling a %s payload from %s failed", kind, node)

    def _on_ack(self, environment, msg, **_kw):
        ar = self.acks.get(msg.data["xid"])
        if ar is not None and not ar.ready():
            ar.set(True)
