"""Typed errors of the KalamDB client.

Every error is a :class:`KalamError` with ``.code`` (KalamDB's error code string, or None),
``.status`` (HTTP status, or None) and ``.message``.  ``str()`` / ``repr()`` never contain a
token or a password: messages pass through :func:`redact` before they are stored.
"""

from __future__ import annotations

import re
import threading

__all__ = [
    "KalamError",
    "ConnectError",
    "OutcomeUnknown",
    "HttpError",
    "RateLimited",
    "AuthFailed",
    "SqlError",
    "ProtocolError",
    "WsAuthError",
    "WsAuthRateLimited",
    "redact",
    "register_secret",
]

# Secrets the process knows about (passwords given to setup/login, tokens received).  They are
# replaced by "***" in every message.  Weak references are not possible for str, so the set is
# bounded: the oldest entries are dropped past _MAX_SECRETS.
_MAX_SECRETS = 4096
_secrets: dict[str, None] = {}
_secrets_lock = threading.Lock()

# Literal patterns that may carry a secret even when we never saw it (SQL echoed by the server).
_PATTERNS = [
    (re.compile(r"(?i)(password\s*)('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")"), r"\1'***'"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "***"),  # JWT
    (re.compile(r"(?i)(\"(?:password|root_password|token|access_token|refresh_token)\"\s*:\s*)\"[^\"]*\""),
     r'\1"***"'),
]


def register_secret(value: str | None) -> None:
    """Remember a secret so that it is redacted from every later error message."""
    if not value or len(value) < 3:
        return
    with _secrets_lock:
        _secrets[value] = None
        if len(_secrets) > _MAX_SECRETS:
            del _secrets[next(iter(_secrets))]


def redact(text: object) -> str:
    """Return ``text`` as a string with known secrets and secret-looking literals masked."""
    if text is None:
        return ""
    s = text if isinstance(text, str) else str(text)
    if _secrets:
        with _secrets_lock:
            known = list(_secrets)
        for secret in known:
            if secret in s:
                s = s.replace(secret, "***")
    for pattern, repl in _PATTERNS:
        s = pattern.sub(repl, s)
    return s


class KalamError(Exception):
    """Base of every client error."""

    def __init__(self, message: str = "", code: str | None = None, status: int | None = None):
        self.message = redact(message)
        self.code = code
        self.status = status
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(str(self.code))
        head = " ".join(parts)
        return f"{head}: {self.message}" if head else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"

    def __reduce__(self):  # picklable across processes, without secrets
        return (_rebuild, (type(self), self.message, self.code, self.status, dict(self.__dict__)))


def _rebuild(cls, message, code, status, state):
    err = cls.__new__(cls)
    KalamError.__init__(err, message, code, status)
    err.__dict__.update(state)
    return err


class ConnectError(KalamError):
    """Nothing was sent: host unreachable, connection refused, DNS or TLS failure, connect timeout.

    ``.host`` and ``.port`` name the endpoint; the message names ``host:port``."""

    def __init__(self, message: str, host: str | None = None, port: int | None = None,
                 code: str | None = None):
        self.host = host
        self.port = port
        super().__init__(message, code=code, status=None)


class OutcomeUnknown(KalamError):
    """The request was sent but no answer came (read timeout, reset): a write may have committed."""


class HttpError(KalamError):
    """The server answered with an error.  ``.body`` holds the decoded answer (dict) when JSON."""

    def __init__(self, message: str = "", code: str | None = None, status: int | None = None,
                 body: object = None):
        super().__init__(message, code=code, status=status)
        self.body = body


class RateLimited(HttpError):
    """HTTP 429 (``RATE_LIMIT_EXCEEDED``, ``rate_limited``, ``IP_BANNED``) or a WS auth rate limit.

    ``.retry_after`` is the advised wait in seconds, or None."""

    def __init__(self, message: str = "", code: str | None = None, status: int | None = 429,
                 body: object = None, retry_after: float | None = None):
        super().__init__(message, code=code, status=status, body=body)
        self.retry_after = retry_after


class AuthFailed(HttpError):
    """401/403/428 on auth routes, or an authentication error code on any route."""


class SqlError(HttpError):
    """Any other ``{"status":"error"}`` answer of ``/v1/api/sql``."""


class ProtocolError(KalamError):
    """An answer that is not what the protocol says (not JSON, wrong shape)."""


class WsAuthError(KalamError):
    """WebSocket authentication failed: ``auth_error`` and/or a close before ``auth_success``.

    ``.close_code`` is the WebSocket close code (1008 usually) or None if none was seen."""

    def __init__(self, message: str = "", close_code: int | None = None, code: str | None = "AUTH_ERROR"):
        super().__init__(message, code=code, status=None)
        self.close_code = close_code


class WsAuthRateLimited(WsAuthError, RateLimited):
    """WebSocket authentication refused by the per-IP auth rate limit (``auth_error`` + 1008)."""

    def __init__(self, message: str = "", close_code: int | None = None):
        WsAuthError.__init__(self, message, close_code=close_code, code="RATE_LIMITED")
        self.body = None
        self.retry_after = None
