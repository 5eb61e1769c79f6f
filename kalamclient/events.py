"""Events returned by :meth:`kalamclient.LiveConnection.recv`.

Plain ``__slots__`` classes (cheap to build on the receive path).  Every event has
``received_at``: ``time.time()`` taken right after its frame was read from the socket.
"""

from __future__ import annotations

__all__ = [
    "Event",
    "AuthSuccess",
    "AuthError",
    "SubscriptionAck",
    "InitialDataBatch",
    "Change",
    "ServerError",
    "Closed",
    "MalformedFrame",
]


class Event:
    __slots__ = ("received_at",)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name, None)!r}" for name in self._fields())
        return f"{type(self).__name__}({fields})"

    @classmethod
    def _fields(cls):
        names = []
        for klass in reversed(cls.__mro__):
            for name in getattr(klass, "__slots__", ()):
                if name != "received_at" and name not in names:
                    names.append(name)
        names.append("received_at")
        return names

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n, None) == getattr(other, n, None) for n in self._fields())

    __hash__ = None  # mutable value objects


class AuthSuccess(Event):
    __slots__ = ("user", "role", "protocol")

    def __init__(self, user, role, protocol, received_at=0.0):
        self.user = user
        self.role = role
        self.protocol = protocol
        self.received_at = received_at


class AuthError(Event):
    __slots__ = ("message",)

    def __init__(self, message, received_at=0.0):
        self.message = message
        self.received_at = received_at


class SubscriptionAck(Event):
    __slots__ = ("subscription_id", "batch_num", "has_more", "status", "last_seq_id", "schema")

    def __init__(self, subscription_id, batch_num, has_more, status, last_seq_id, schema, received_at=0.0):
        self.subscription_id = subscription_id
        self.batch_num = batch_num
        self.has_more = has_more
        self.status = status
        self.last_seq_id = last_seq_id
        self.schema = schema
        self.received_at = received_at


class InitialDataBatch(Event):
    __slots__ = ("subscription_id", "rows", "batch_num", "has_more", "status", "last_seq_id")

    def __init__(self, subscription_id, rows, batch_num, has_more, status, last_seq_id, received_at=0.0):
        self.subscription_id = subscription_id
        self.rows = rows
        self.batch_num = batch_num
        self.has_more = has_more
        self.status = status
        self.last_seq_id = last_seq_id
        self.received_at = received_at


class Change(Event):
    """One change notification.

    ``row`` is ``rows[0]`` (None for a delete); ``old`` is ``old_values[0]`` or None; ``seq`` is the
    int of ``row["_seq"]`` (insert/update) or ``old["_seq"]`` (delete: the tombstone's seq), or None
    when absent (STREAM hard delete).  Row values are raw JSON (BIGINT columns are strings)."""

    __slots__ = ("subscription_id", "change_type", "row", "old", "seq")

    def __init__(self, subscription_id, change_type, row, old, seq, received_at=0.0):
        self.subscription_id = subscription_id
        self.change_type = change_type
        self.row = row
        self.old = old
        self.seq = seq
        self.received_at = received_at


class ServerError(Event):
    __slots__ = ("subscription_id", "code", "message")

    def __init__(self, subscription_id, code, message, received_at=0.0):
        self.subscription_id = subscription_id
        self.code = code
        self.message = message
        self.received_at = received_at


class Closed(Event):
    """The socket ended.  ``clean`` is True when a close frame was exchanged (either side)."""

    __slots__ = ("code", "reason", "clean")

    def __init__(self, code, reason, clean, received_at=0.0):
        self.code = code
        self.reason = reason
        self.clean = clean
        self.received_at = received_at


class MalformedFrame(Event):
    """A frame that could not be understood (bad gzip, not JSON, unknown type, wrong shape)."""

    __slots__ = ("reason", "raw_prefix")

    def __init__(self, reason, raw_prefix, received_at=0.0):
        self.reason = reason
        self.raw_prefix = raw_prefix
        self.received_at = received_at
