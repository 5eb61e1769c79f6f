"""WebSocket live queries (``GET /v1/ws``) on websocket-client's low-level ``WebSocket``.

One :class:`LiveConnection` per socket; one greenlet (or thread) calls :meth:`recv` on it.  A
background keepalive (``threading``: a greenlet under gevent monkey-patching) sends a WebSocket
protocol Ping every ``ping_interval`` seconds, because KalamDB never pings and closes a socket on
which nothing arrived for ``client_timeout_secs``.

The receive path is kept cheap: the socket is read in large chunks; data frames are cut out of that
buffer here (websocket-client's frame parser only sees control, masked or RSV frames); under gevent
the raw socket is read directly and the reader waits on its read watcher; payloads are decoded with
orjson; gzip binary frames (magic ``1f 8b``) are inflated with zlib (wbits 31); events are
``__slots__`` objects; no logging per message. :meth:`LiveConnection.recv_many` hands out every event
of one wake-up at once. Under gevent, :meth:`LiveConnection.push_changes` goes further: the event
loop reads the socket in the watcher's callback and hands each change to a handler there, with no
greenlet switch per wake-up (a paced feed wakes the process once per frame).
"""

from __future__ import annotations

import importlib
import os
import socket
import struct
import sys
import threading
import time
import zlib
from collections import deque
from urllib.parse import urlsplit, urlunsplit

import orjson
import websocket
from websocket import (WebSocketAddressException, WebSocketBadStatusException,
                       WebSocketConnectionClosedException, WebSocketException, WebSocketTimeoutException)

from .errors import (AuthFailed, ConnectError, HttpError, KalamError, RateLimited, WsAuthError,
                     WsAuthRateLimited, register_secret)
from .events import (AuthError, AuthSuccess, Change, Closed, InitialDataBatch, MalformedFrame,
                     ServerError, SubscriptionAck)
from .http import split_host_port

__all__ = ["LiveConnection", "decode_frame", "ws_url", "OP_TEXT", "OP_BINARY"]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GZIP_MAGIC = b"\x1f\x8b"
# 64 KiB a read: a 256 KiB one is beyond glibc's mmap threshold, and each read of a frame or two then
# paid an mmap, page faults and a munmap (bench/peers/recv_micro.py: 58 -> 20 us a frame, event-loop reads)
_RECV_CHUNK = 64 * 1024
_RAW_PREFIX = 200
_MORE = False  # _cut_data_frame: the buffer holds less than one whole frame
_SHAPE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)
_RATE_LIMIT_HINT = "too many"
# Arrival times come from the kernel (SO_TIMESTAMPNS: when the bytes reached this host's socket), not
# from when this greenlet got round to them. One process serves many sockets: a frame that lands on
# all of them at once waits, on each, for the others' decoding and recording, and a user-space stamp
# would add that wait (the generator's own lag) to the latency it reports for the server.
# (Python 3.11 has no constant for it; 35 is Linux's asm-generic value, x86 and arm alike)
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_TS_ANCILLARY = socket.CMSG_SPACE(16) if _SO_TIMESTAMPNS is not None else 0
_TIMESPEC = struct.Struct("@qq")
# Added to kernel stamps (they read the system clock directly): a process that shifts its time.time() to
# stand in for a machine whose clock is off (loadtest.distributed's test hook) shifts them alike.
kernel_stamp_shift_s = 0.0

# Push mode's read of a socket, compiled (kalamclient/_speedups.c, built at install where a C compiler is
# found): the read watcher calls _on_readable_compiled(conn), which does what _on_readable's Python below does
# (and calls it while events wait for recv()); the Python runs where it was not built, or with
# KALAMDB_LT_PURE_PYTHON=1 (the tests run both). A binary of another interface is not used.
_on_readable_compiled = None
if not os.environ.get("KALAMDB_LT_PURE_PYTHON"):
    try:  # by name: the compiled module imports nothing of the package, so this is no circle through kalamclient
        _speedups = importlib.import_module(__package__ + "._speedups")
    except ImportError:
        pass
    else:
        if getattr(_speedups, "INTERFACE", None) == 2:
            _speedups.configure(Change, globals(), time)
            _on_readable_compiled = _speedups.on_readable


def ws_url(base_url: str, compress: bool = True, path: str = "/v1/ws") -> str:
    """``http://h:p`` → ``ws://h:p/v1/ws`` (``?compress=false`` when ``compress`` is False)."""
    if "://" not in base_url:
        base_url = "http://" + base_url
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme, "ws")
    query = "" if compress else "compress=false"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


# -- decoding --------------------------------------------------------------------------------------

def _malformed(reason: str, raw, received_at: float) -> MalformedFrame:
    return MalformedFrame(reason, bytes(raw[:_RAW_PREFIX]), received_at)


def _seq_of(row):
    s = row.get("_seq")
    return None if s is None else int(s)


def _change(msg, ts):
    ct = msg["change_type"]
    sid = msg["subscription_id"]
    if ct == "insert" or ct == "update":
        row = msg["rows"][0]
        ov = msg.get("old_values")
        old = ov[0] if ov else None
        s = row.get("_seq")
    elif ct == "delete":
        row = None
        old = msg["old_values"][0]
        s = old.get("_seq")
    else:
        raise ValueError(f"unknown change_type {ct!r}")
    if type(sid) is not str:
        raise TypeError("subscription_id is not a string")
    return Change(sid, ct, row, old, None if s is None else int(s), ts)


def _batch(msg, ts):
    bc = msg["batch_control"]
    rows = msg["rows"]
    if type(rows) is not list:
        raise TypeError("rows is not a list")
    return InitialDataBatch(msg["subscription_id"], rows, bc["batch_num"], bc["has_more"], bc["status"],
                            bc.get("last_seq_id"), ts)


def _ack(msg, ts):
    bc = msg.get("batch_control") or {}
    return SubscriptionAck(msg["subscription_id"], bc.get("batch_num"), bc.get("has_more"),
                           bc.get("status"), bc.get("last_seq_id"), msg.get("schema"), ts)


def _error(msg, ts):
    return ServerError(msg.get("subscription_id"), msg.get("code"), msg.get("message"), ts)


def _auth_success(msg, ts):
    return AuthSuccess(msg["user"], msg.get("role"), msg.get("protocol"), ts)


def _auth_error(msg, ts):
    return AuthError(msg.get("message"), ts)


_HANDLERS = {
    "change": _change,
    "initial_data_batch": _batch,
    "subscription_ack": _ack,
    "error": _error,
    "auth_success": _auth_success,
    "auth_error": _auth_error,
}


def decode_frame(data: bytes, opcode: int = OP_TEXT, received_at: float | None = None):
    """Decode one server data frame into an event; never raises (bad input → MalformedFrame)."""
    ts = time.time() if received_at is None else received_at
    if opcode == OP_BINARY and data[:2] == _GZIP_MAGIC:
        try:
            data = zlib.decompress(data, 31)
        except (zlib.error, ValueError) as exc:
            return _malformed(f"bad gzip frame: {exc}", data, ts)
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        kind = "binary" if opcode == OP_BINARY else "text"
        return _malformed(f"{kind} frame is not JSON: {exc}", data, ts)
    try:
        t = msg["type"]
        if t == "change":  # the hot path
            return _change(msg, ts)
        handler = _HANDLERS.get(t)
    except _SHAPE_ERRORS as exc:
        return _malformed(f"unexpected message shape: {type(exc).__name__}: {exc}", data, ts)
    if handler is None:
        return _malformed(f"unknown message type {t!r}", data, ts)
    try:
        return handler(msg, ts)
    except _SHAPE_ERRORS as exc:
        return _malformed(f"unexpected {t} shape: {type(exc).__name__}: {exc}", data, ts)


def _parse_close(payload: bytes) -> tuple[int, str]:
    if len(payload) >= 2:
        code = struct.unpack("!H", payload[:2])[0]
        return code, payload[2:].decode("utf-8", "replace")
    return 1005, ""


# -- connection ------------------------------------------------------------------------------------

class LiveConnection:
    """One WebSocket to ``/v1/ws``.

    ``auth="header"`` sends ``Authorization: Bearer`` on the upgrade; ``auth="message"`` sends the
    ``authenticate`` message (with its required ``protocol`` object) after the upgrade.
    ``ping_interval`` None or 0 disables the keepalive.  ``auto_next_batch`` answers every
    ``initial_data_batch`` with ``has_more`` by a ``next_batch`` carrying its ``last_seq_id``."""

    def __init__(self, base_url: str, token: str | None, compress: bool = True, auth: str = "header",
                 ping_interval: float | None = 5.0, connect_timeout: float = 10.0,
                 auto_next_batch: bool = True, path: str = "/v1/ws", sockopt: tuple = ()):
        if auth not in ("header", "message"):
            raise ValueError("auth must be 'header' or 'message'")
        self.url = ws_url(base_url, compress, path)
        self.host, self.port = split_host_port(self.url)
        self._token = token
        register_secret(token)
        self.compress = compress
        self.auth = auth
        self.ping_interval = ping_interval
        self.connect_timeout = float(connect_timeout)
        self.auto_next_batch = auto_next_batch
        self.sockopt = tuple(sockopt)   # (level, option, value) set before connecting, e.g. a small SO_RCVBUF

        self.user = None
        self.role = None
        self._ws = None
        self._sock = None
        self._pending: deque = deque()
        self._ended = False
        self._closed_event: Closed | None = None
        self._closed_delivered = False
        self._close_sent: int | None = None
        self._reading = False
        self._ping_stop = None
        self._ping_thread = None
        # read buffer (see _buffered_recv)
        self._rbuf = b""
        self._rpos = 0
        self._deadline: float | None = None
        self._cur_timeout: object = object()
        self._frag_op = None
        self._frag: list | None = None
        self._kernel_stamps = False
        self._read_at = 0.0  # arrival time (Unix s) of the bytes of the newest read
        self._real = self._hub = self._rwatch = None  # gevent: the raw socket, its hub and read watcher
        # push mode (push_changes): the event loop reads the socket and hands changes to _push itself
        self._push = None
        self._push_watch = None    # the loop's read watcher of the socket, started while pushing
        self._push_fd = -1
        self._pushed: deque = deque()   # events the loop read that wait for recv(), in arrival order
        self._push_waiter = None   # recv() waiting for the loop
        self._push_fallen = False  # the loop met what only recv() handles: recv() reads until it is past
        self._push_exc = None      # the read error the loop met
        self._push_out = False     # recv() has handed out an event its caller has not yet recorded
        # cheap counters
        self.frames = 0
        self.gzip_frames = 0
        self.bytes_in = 0
        self.pings_sent = 0
        self.last_opcode = None
        # the harness's own lag: from a frame's arrival (kernel stamp) to its event handed out
        self.lag_sum = 0.0
        self.lag_max = 0.0

    def __repr__(self) -> str:
        state = "closed" if self._ended else ("open" if self._ws is not None else "new")
        return f"LiveConnection({self.url!r}, user={self.user!r}, {state})"

    @property
    def closed(self) -> bool:
        return self._ended

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ended

    # -- opening ---------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def open(self) -> None:
        """Low level: the upgrade only (with the Bearer header when ``auth="header"``), no waiting
        for ``auth_success``.  Starts the keepalive.  :meth:`connect` calls it."""
        if self._ws is not None:
            raise RuntimeError("LiveConnection is single-use: already opened")
        headers = []
        if self.auth == "header" and self._token:
            headers.append("Authorization: Bearer " + self._token)
        try:
            ws = websocket.create_connection(
                self.url, timeout=self.connect_timeout, header=headers, suppress_origin=True,
                skip_utf8_validation=True, enable_multithread=True, sockopt=self.sockopt)
        except WebSocketBadStatusException as exc:
            raise self._bad_status(exc) from None
        except (WebSocketTimeoutException, socket.timeout, TimeoutError):
            raise ConnectError(f"cannot connect to {self._where()}: no upgrade answer within "
                               f"{self.connect_timeout:g}s", self.host, self.port) from None
        except ConnectionRefusedError:
            raise ConnectError(f"cannot connect to {self._where()}: connection refused",
                               self.host, self.port) from None
        except (WebSocketAddressException, socket.gaierror):
            raise ConnectError(f"cannot connect to {self._where()}: host name not resolved",
                               self.host, self.port) from None
        except (OSError, WebSocketException) as exc:
            raise ConnectError(f"cannot connect to {self._where()}: {type(exc).__name__}: {exc}",
                               self.host, self.port) from None
        self._ws = ws
        self._sock = ws.sock
        self._cur_timeout = self._sock.gettimeout()
        self._kernel_stamps = self._enable_kernel_stamps()
        # Read the socket in large chunks; websocket-client's frame parser cuts frames out of them.
        ws.frame_buffer.recv = self._buffered_recv
        self._setup_reader()
        if self.ping_interval:
            self._start_pinger(float(self.ping_interval))

    def _enable_kernel_stamps(self) -> bool:
        """SO_TIMESTAMPNS on a plain TCP socket (not TLS: SSLSocket has no recvmsg); else False and
        arrivals are stamped with time.time() when read."""
        sock = self._sock
        if _SO_TIMESTAMPNS is None or not hasattr(sock, "recvmsg") or hasattr(sock, "getpeercert"):
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            return False
        return True

    def _bad_status(self, exc: WebSocketBadStatusException) -> KalamError:
        status = exc.status_code
        body = (exc.resp_body or b"")[:200]
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        msg = f"upgrade to {self._where()} refused: HTTP {status} {body}".strip()
        if status == 429:
            return RateLimited(msg, code="RATE_LIMIT_EXCEEDED", status=429)
        if status in (401, 403):
            return AuthFailed(msg, status=status)
        return HttpError(msg, status=status)

    def connect(self) -> AuthSuccess:
        """Upgrade and authenticate; returns the ``auth_success`` event.

        Raises :class:`ConnectError`, :class:`HttpError` (upgrade refused), or
        :class:`WsAuthError` (``auth_error``/close before ``auth_success``; a rate-limited
        authentication raises :class:`WsAuthRateLimited`, which is also a ``RateLimited``)."""
        self.open()
        if self.auth == "message":
            self.authenticate()
        deadline = time.monotonic() + self.connect_timeout
        auth_error = None
        early = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                if auth_error is not None:
                    raise self._auth_exc(auth_error.message, None)
                raise WsAuthError(f"no auth_success from {self._where()} within {self.connect_timeout:g}s",
                                  code="AUTH_TIMEOUT")
            ev = self.recv(remaining if auth_error is None else min(remaining, 2.0))
            if ev is None:
                if auth_error is not None:
                    self.close()
                    raise self._auth_exc(auth_error.message, None)
                continue
            t = type(ev)
            if t is AuthSuccess:
                self.user, self.role = ev.user, ev.role
                self._pending.extend(early)
                return ev
            if t is AuthError:
                auth_error = ev
            elif t is Closed:
                if auth_error is not None:
                    raise self._auth_exc(auth_error.message, ev.code)
                raise WsAuthError(f"socket closed before auth_success: {ev.code} {ev.reason}".strip(),
                                  close_code=ev.code, code="AUTH_ERROR")
            else:
                early.append(ev)

    @staticmethod
    def _auth_exc(message, close_code):
        message = message or "authentication failed"
        if _RATE_LIMIT_HINT in message.lower():
            return WsAuthRateLimited(message, close_code)
        return WsAuthError(message, close_code)

    # -- sending ---------------------------------------------------------------------------------
    def send_raw(self, data, binary: bool = False) -> None:
        """Low level: send one text (str/bytes) or binary frame as is."""
        ws = self._ws
        if ws is None or self._ended:
            raise ConnectError(f"websocket to {self._where()} is not open", self.host, self.port)
        try:
            ws.send(data, OP_BINARY if binary else OP_TEXT)
        except (OSError, WebSocketException) as exc:
            raise ConnectError(f"send to {self._where()} failed: {type(exc).__name__}",
                               self.host, self.port) from None

    def send_json(self, obj) -> None:
        self.send_raw(orjson.dumps(obj))

    def authenticate(self, token: str | None = None) -> None:
        """Send the ``authenticate`` message (with the required ``protocol`` object)."""
        token = token or self._token
        register_secret(token)
        self.send_json({"type": "authenticate", "method": "jwt", "token": token,
                        "protocol": {"serialization": "json",
                                     "compression": "gzip" if self.compress else "none"}})

    def subscribe(self, sub_id: str, sql: str, options: dict | None = None) -> None:
        """``options`` None → live only (immediate ``ready``); a dict (even ``{}``) → snapshot in
        batches (``batch_size``, ``last_rows``, ``from``: exclusive resume point, sent as int)."""
        sub = {"id": sub_id, "sql": sql}
        if options is not None:
            opts = dict(options)
            for key in ("from", "from_seq_id", "batch_size", "last_rows"):
                if opts.get(key) is not None:
                    opts[key] = int(opts[key])
            sub["options"] = opts
        self.send_json({"type": "subscribe", "subscription": sub})

    def next_batch(self, sub_id: str, last_seq_id) -> None:
        self.send_json({"type": "next_batch", "subscription_id": sub_id, "last_seq_id": int(last_seq_id)})

    def unsubscribe(self, sub_id: str) -> None:
        self.send_json({"type": "unsubscribe", "subscription_id": sub_id})

    def ping(self) -> None:
        """Send one WebSocket protocol Ping frame now."""
        ws = self._ws
        if ws is None or self._ended:
            raise ConnectError(f"websocket to {self._where()} is not open", self.host, self.port)
        try:
            ws.ping()
        except (OSError, WebSocketException) as exc:
            raise ConnectError(f"ping to {self._where()} failed: {type(exc).__name__}",
                               self.host, self.port) from None
        self.pings_sent += 1

    # -- keepalive -------------------------------------------------------------------------------
    def _start_pinger(self, interval: float) -> None:
        stop = threading.Event()
        self._ping_stop = stop
        thread = threading.Thread(target=self._ping_loop, args=(stop, interval),
                                  name=f"kalam-ping-{self._where()}", daemon=True)
        self._ping_thread = thread
        thread.start()

    def _ping_loop(self, stop, interval: float) -> None:
        while not stop.wait(interval):
            ws = self._ws
            if ws is None or self._ended:
                return
            try:
                ws.ping()
                self.pings_sent += 1
            except WebSocketTimeoutException:
                continue  # send buffer momentarily full; try again next interval
            except Exception:  # socket gone: the reader reports Closed
                return

    def _stop_pinger(self) -> None:
        if self._ping_stop is not None:
            self._ping_stop.set()

    # -- receiving -------------------------------------------------------------------------------
    # The socket is read in large chunks into one buffer (_rbuf from _rpos on). Data frames (unmasked,
    # no RSV bits: what a server sends) are cut out of it here (_cut_data_frame); anything else is left
    # to websocket-client's frame parser, which reads the same buffer through _buffered_recv.
    #
    # Under gevent (a cooperative socket) a read does not go through gevent's socket methods: the
    # underlying non-blocking socket is read directly, and when it has nothing the reader waits on the
    # socket's own read watcher (a Waiter, plus a loop timer only when a timeout is given), so a wake-up
    # costs one read and one switch, not a Timeout object, a failed read and gevent's retry.

    def _setup_reader(self) -> None:
        sock = self._sock
        self._real = self._hub = self._rwatch = None
        if hasattr(sock, "getpeercert"):  # TLS: only the socket object knows how to read it
            return
        hub = getattr(sock, "hub", None)
        watcher = getattr(sock, "_read_event", None)
        real = getattr(sock, "_sock", None)
        if hub is None or watcher is None or real is None or sock.__class__.__module__.split(".")[0] != "gevent":
            return
        try:
            from gevent.hub import Waiter
        except ImportError:  # pragma: no cover
            return
        self._Waiter = Waiter
        self._real, self._hub, self._rwatch = real, hub, watcher

    def _wait_readable(self, timeout: float | None) -> None:
        """gevent: wait until the socket is readable (raises WebSocketTimeoutException after timeout)."""
        hub = self._hub
        watcher = self._rwatch
        if watcher.callback is not None:
            from gevent.exceptions import ConcurrentObjectUseError
            raise ConcurrentObjectUseError("another greenlet is already reading this LiveConnection's socket")
        waiter = self._Waiter(hub)
        watcher.start(waiter.switch, True)
        try:
            if not self._park(waiter, timeout):
                raise WebSocketTimeoutException("timed out")
        finally:
            watcher.stop()

    def _park(self, waiter, timeout: float | None) -> bool:
        """gevent: wait on ``waiter`` (armed by the caller) at most ``timeout`` s; False when it passed."""
        timer = None
        try:
            if timeout is not None:
                timer = self._hub.loop.timer(timeout)
                timer.start(waiter.switch, False)
            return waiter.get()
        finally:
            if timer is not None:
                timer.close()

    def _read_some(self) -> None:
        """One read into the buffer (after waiting, at most until the deadline); stamps _read_at.
        Raises WebSocketTimeoutException, WebSocketConnectionClosedException or OSError."""
        deadline = self._deadline
        real = self._real
        stamps = self._kernel_stamps
        anc = None
        if real is not None:  # gevent: read first (data usually waits), wait only when there is none
            while True:
                try:
                    if stamps:
                        data, anc, _flags, _addr = real.recvmsg(_RECV_CHUNK, _TS_ANCILLARY)
                    else:
                        data = real.recv(_RECV_CHUNK)
                    break
                except BlockingIOError:
                    pass
                except InterruptedError:
                    continue
                if deadline is None:
                    self._wait_readable(None)
                else:
                    t = deadline - time.monotonic()
                    if t <= 0:
                        raise WebSocketTimeoutException("timed out")
                    self._wait_readable(t)
        else:
            if deadline is None:
                t = None
            else:
                t = deadline - time.monotonic()
                if t <= 0:
                    raise WebSocketTimeoutException("timed out")
            if t != self._cur_timeout:
                self._sock.settimeout(t)
                self._cur_timeout = t
            try:
                if stamps:
                    data, anc, _flags, _addr = self._sock.recvmsg(_RECV_CHUNK, _TS_ANCILLARY)
                else:
                    data = self._sock.recv(_RECV_CHUNK)
            except (socket.timeout, TimeoutError, BlockingIOError):
                raise WebSocketTimeoutException("timed out") from None
        if not data:
            raise WebSocketConnectionClosedException("connection closed by the peer")
        self._take(data, anc)

    def _take(self, data: bytes, anc) -> None:
        """Append one read to the buffer and stamp its arrival."""
        # TCP reports the stamp of the newest segment copied by this read
        if anc and anc[0][1] == _SO_TIMESTAMPNS and len(anc[0][2]) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(anc[0][2])
            self._read_at = sec + nsec * 1e-9 + kernel_stamp_shift_s
        else:
            self._read_at = time.time()
        self.bytes_in += len(data)
        pos = self._rpos
        buf = self._rbuf
        if pos < len(buf):
            self._rbuf = (buf[pos:] if pos else buf) + data
        else:
            self._rbuf = data
        self._rpos = 0

    def _buffered_recv(self, n: int) -> bytes:
        """frame_buffer.recv replacement (websocket-client's parser): up to ``n`` bytes of the buffer."""
        buf = self._rbuf
        pos = self._rpos
        if len(buf) - pos <= 0:
            self._read_some()
            buf = self._rbuf
            pos = 0
        end = pos + n
        if end >= len(buf):
            self._rbuf = b""
            self._rpos = 0
            return buf[pos:] if pos else buf
        self._rpos = end
        return buf[pos:end]

    def _cut_data_frame(self):
        """(opcode, fin, payload) of a data frame held whole in the read buffer; _MORE when the buffer
        holds less than one (more bytes are needed); None when the next frame is one for
        websocket-client's parser (control frames, masked or RSV frames), which validates it."""
        buf = self._rbuf
        pos = self._rpos
        size = len(buf)
        if size - pos < 2:
            return _MORE
        b1 = buf[pos]
        if b1 & 0x70 or (b1 & 0x0F) > OP_BINARY:
            return None
        n = buf[pos + 1]
        if n < 126:
            start = pos + 2
        elif n == 126:
            start = pos + 4
            if start > size:
                return _MORE
            n = (buf[pos + 2] << 8) | buf[pos + 3]
        elif n == 127:
            start = pos + 10
            if start > size:
                return _MORE
            n = int.from_bytes(buf[pos + 2:start], "big")
        else:  # masked
            return None
        end = start + n
        if end > size:
            return _MORE
        if end == size:
            self._rbuf = b""
            self._rpos = 0
        else:
            self._rpos = end
        return b1 & 0x0F, b1 & 0x80, buf[start:end]

    def recv(self, timeout: float | None = None):
        """Next event, or None when ``timeout`` seconds pass without one.

        The end of the socket is reported once as :class:`Closed`; later calls return None at once."""
        pending = self._pending
        if pending:
            return pending.popleft()
        if self._ended:
            if not self._closed_delivered and self._closed_event is not None:
                self._closed_delivered = True
                return self._closed_event
            return None
        if self._ws is None:
            raise RuntimeError("LiveConnection not opened: call connect() first")
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._reading = True
        try:
            if self._push is not None:
                return self._recv_pushed(timeout)
            return self._next_event()
        finally:
            self._reading = False

    def recv_many(self, timeout: float | None = None, limit: int = 1024) -> list:
        """Every event that one wake-up brings: waits like :meth:`recv` for the first (``[]`` when
        ``timeout`` passes without one), then adds those whose frames are already whole in the read
        buffer (at most ``limit``), without reading the socket again. Each event has its own
        ``received_at``; a :class:`Closed` is always the last one."""
        ev = self.recv(timeout)
        if ev is None:
            return []
        out = [ev]
        if ev.__class__ is Closed or self._ended:
            return out
        if self._push is not None:  # the event loop reads the socket: only what it left for recv()
            while self._pushed and len(out) < limit and out[-1].__class__ is not Closed:
                out.append(self.recv(0))
            return out
        pending = self._pending
        self._reading = True
        self._deadline = 0.0  # never read the socket again: only what is buffered
        try:
            while len(out) < limit:
                if pending:
                    out.append(pending.popleft())
                    continue
                if len(self._rbuf) - self._rpos < 2 and self._ws.frame_buffer.header is None:
                    break
                ev = self._next_event()
                if ev is None:
                    break
                out.append(ev)
                if ev.__class__ is Closed:
                    break
        finally:
            self._reading = False
        return out

    def _next_event(self):
        ws = self._ws
        fbuf = ws.frame_buffer
        while True:
            try:
                if fbuf.header is None and not fbuf.recv_buffer:
                    cut = self._cut_data_frame()
                    if cut is _MORE:
                        self._read_some()
                        continue
                else:
                    cut = None
                if cut is not None:
                    op, fin, data = cut
                else:
                    frame = fbuf.recv_frame()
                    op, fin, data = frame.opcode, frame.fin, frame.data
            except WebSocketTimeoutException:
                return None
            except (WebSocketConnectionClosedException, OSError, ValueError) as exc:
                return self._deliver_end(self._lost(exc))
            except WebSocketException as exc:  # protocol violation: the stream is unusable
                return self._deliver_end(Closed(1002, f"protocol error: {exc}", False, time.time()))
            ts = self._read_at
            if op <= OP_BINARY:
                self._note_lag(time.time() - ts)
                ev = self._event_of(op, fin, data, ts)
                if ev is None:
                    continue
                if ev.__class__ is Closed:
                    return self._deliver_end(ev)
                self._next_batch_of(ev)
                return ev
            self.frames += 1
            if op == OP_CLOSE:
                code, reason = _parse_close(data)
                if self._close_sent is None:
                    try:
                        ws.send_close(code if code not in (1005, 1006, 1015) else 1000)
                    except Exception:
                        pass
                return self._deliver_end(Closed(code, reason, True, ts))
            elif op == OP_PING:
                try:
                    ws.pong(data)
                except Exception:
                    pass
            # else pong

    def _event_of(self, op: int, fin, data: bytes, ts: float):
        """The event of one data frame (text, binary or continuation); None while a fragmented message
        is incomplete; a Closed for a stray continuation. No I/O: the event loop's callback calls it."""
        self.frames += 1
        if op == OP_CONT:
            if self._frag is None:
                return Closed(1002, "protocol error: stray continuation frame", False, ts)
            self._frag.append(data)
            if not fin:
                return None
            op, data = self._frag_op, b"".join(self._frag)
            self._frag_op = self._frag = None
        elif not fin:
            self._frag_op, self._frag = op, [data]
            return None
        self.last_opcode = op
        if op == OP_BINARY and data[:2] == _GZIP_MAGIC:
            self.gzip_frames += 1
        return decode_frame(data, op, ts)

    def _note_lag(self, lag: float, events: int = 1) -> None:
        """The harness's own lag: ``events`` events waited ``lag`` s here between their arrival and decoding."""
        self.lag_sum += lag * events
        if lag > self.lag_max:
            self.lag_max = lag

    def _next_batch_of(self, ev) -> None:
        if (ev.__class__ is InitialDataBatch and ev.has_more and self.auto_next_batch
                and ev.last_seq_id is not None):
            try:
                self.next_batch(ev.subscription_id, ev.last_seq_id)
            except (KalamError, ValueError, TypeError):
                pass  # the socket is gone (next recv reports Closed) or bad last_seq_id

    # -- push mode -------------------------------------------------------------------------------
    # A paced feed (frames arriving one by one, as from a real server) wakes the reader once per frame,
    # and a greenlet's wake-up (the loop's callback, a switch into the reader and back, its wait set up
    # again) costs more than the frame's own work. In push mode the socket's read watcher stays
    # started and its callback, in the event loop, reads the socket, cuts the whole data frames and
    # hands each Change to the handler there. Anything else (a control frame, an error, the end, an
    # event that is not a change, and every change behind one, to keep their order) waits in _pushed
    # for recv(), which handles it as before and then lets the loop read again.

    def push_changes(self, handler) -> bool:
        """Under gevent: from now on ``handler(change)`` is called in the event loop for every
        :class:`Change` (never switching: it must not block), and :meth:`recv` returns the other events
        (and changes that came behind one). Returns False where the loop cannot read the socket (no
        gevent, TLS): the caller keeps reading changes with :meth:`recv`."""
        if self._real is None or self._ws is None or self._ended:
            return False
        self._push = handler
        if self._push_watch is None:
            self._push_fd = self._real.fileno()
            self._push_watch = self._hub.loop.io(self._push_fd, 1)
        self._resume_push()
        return True

    def _resume_push(self) -> None:
        fbuf = self._ws.frame_buffer
        if self._push_watch is None or self._ended or fbuf.header is not None or fbuf.recv_buffer:
            return
        self._push_fallen = False
        self._push_exc = None
        if _on_readable_compiled is not None:
            self._push_watch.start(_on_readable_compiled, self)
        else:
            self._push_watch.start(self._on_readable)
        self._push_buffered()

    def _stop_push(self) -> None:
        if self._push_watch is not None:
            self._push_watch.stop()
            self._push_watch.close()
            self._push_watch = None
        self._push = None

    def _fall_back(self, exc) -> None:
        """The loop stops reading: recv() takes over (a frame only it handles, an error or the end)."""
        if self._push_watch is not None:
            self._push_watch.stop()
        self._push_fallen = True
        self._push_exc = exc
        self._wake_receiver()

    def _wake_receiver(self) -> None:
        w = self._push_waiter
        if w is not None:
            self._push_waiter = None
            self._hub.loop.run_callback(w.switch, True)

    def _on_readable(self) -> None:
        real = self._real
        try:
            if self._kernel_stamps:
                data, anc, _flags, _addr = real.recvmsg(_RECV_CHUNK, _TS_ANCILLARY)
            else:
                data, anc = real.recv(_RECV_CHUNK), None
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fall_back(exc)
            return
        if not data:
            self._fall_back(None)
            return
        self._take(data, anc)
        self._push_buffered()

    def _push_buffered(self) -> None:
        """Hand out every whole data frame of the buffer (in the loop, or in recv() when it resumes)."""
        pushed = self._pushed
        handler = self._push
        ts = self._read_at
        lag = time.time() - ts      # one clock read for every frame of this read (they arrived together)
        events = 0
        try:
            while True:
                cut = self._cut_data_frame()
                if cut is _MORE:
                    return
                if cut is None:  # a control, masked or RSV frame: websocket-client's parser, in recv()
                    self._fall_back(None)
                    return
                ev = self._event_of(cut[0], cut[1], cut[2], ts)
                if ev is None:
                    continue
                events += 1
                # a change behind an event still waiting in _pushed, or one that recv() has just handed out,
                # waits its turn: the handler must see them in the order they came
                if ev.__class__ is Change and not pushed and not self._push_out:
                    handler(ev)
                    continue
                pushed.append(ev)
                self._wake_receiver()
                if ev.__class__ is Closed:  # a stray continuation: the stream is unusable
                    if self._push_watch is not None:
                        self._push_watch.stop()
                    return
        finally:
            if events:
                self._note_lag(lag, events)

    def _recv_pushed(self, timeout: float | None):
        pushed = self._pushed
        self._push_out = False  # the caller has recorded what the last call returned
        while True:
            if pushed:
                ev = pushed.popleft()
                if ev.__class__ is Closed:
                    return self._deliver_end(ev)
                self._next_batch_of(ev)
                self._push_out = True
                return ev
            if self._push_fallen:
                if self._push_exc is not None:
                    return self._deliver_end(self._lost(self._push_exc))
                ev = self._next_event()
                if ev is not None:
                    self._push_out = True
                if not self._ended:
                    self._resume_push()
                return ev
            t = None
            if timeout is not None:
                t = self._deadline - time.monotonic()
                if t <= 0:
                    return None
            waiter = self._push_waiter = self._Waiter(self._hub)
            try:
                woke = self._park(waiter, t)
            finally:
                self._push_waiter = None
            if not woke:
                return None

    def _lost(self, exc) -> Closed:
        if self._close_sent is not None:
            return Closed(self._close_sent, "closed by client", True, time.time())
        return Closed(1006, f"connection lost: {type(exc).__name__}: {exc}", False, time.time())

    def _deliver_end(self, ev: Closed) -> Closed:
        self._finish(ev)
        self._closed_delivered = True
        return ev

    def _finish(self, ev: Closed) -> None:
        if self._ended:
            return
        self._ended = True
        self._closed_event = ev
        self._stop_pinger()
        self._stop_push()
        ws = self._ws
        if ws is not None:
            try:
                ws.shutdown()
            except Exception:
                pass

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and end the socket.  A reader blocked in :meth:`recv` (another
        greenlet/thread) wakes up with ``Closed(code, "closed by client", True)``; otherwise the
        next :meth:`recv` returns it."""
        if self._ended or self._ws is None:
            self._ended = True
            return
        self._stop_pinger()
        ws = self._ws
        self._close_sent = code
        try:
            ws.send_close(code, reason)
        except Exception:
            pass
        if not self._reading:
            # Nobody reads: wait briefly for the server's close echo, discarding data frames (the
            # event loop no longer reads for a push handler: what it had not handed out is dropped)
            self._stop_push()
            self._pushed.clear()
            self._deadline = time.monotonic() + 1.0
            try:
                while True:
                    frame = ws.frame_buffer.recv_frame()
                    if frame.opcode == OP_CLOSE:
                        break
            except Exception:
                pass
            self._finish(Closed(code, "closed by client", True, time.time()))
            return
        # A reader is blocked on the socket: wake it (it reports Closed) without reading here.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
