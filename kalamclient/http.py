"""HTTP side of the KalamDB client (requests.Session): setup, status, login, refresh, SQL.

Error mapping (see docs/architecture.md):

* nothing sent (refused, DNS, connect timeout, TLS)  → :class:`ConnectError` naming ``host:port``
* sent, no answer (read timeout, reset, cut body)   → :class:`OutcomeUnknown`
* HTTP 429 or a rate-limit code                      → :class:`RateLimited`
* 401/403/428 on auth routes, or an auth error code → :class:`AuthFailed`
* other ``{"status":"error"}`` of ``/v1/api/sql``     → :class:`SqlError`
* any other error answer                             → :class:`HttpError`
* a 2xx answer that is not the documented JSON       → :class:`ProtocolError`
"""

from __future__ import annotations

import http.cookiejar
from urllib.parse import urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter

from .errors import (AuthFailed, ConnectError, HttpError, OutcomeUnknown, ProtocolError,
                     RateLimited, SqlError, register_secret)
from .results import QueryResult, Tokens

__all__ = ["KalamHttp", "RATE_LIMIT_CODES", "AUTH_CODES", "split_host_port"]

RATE_LIMIT_CODES = frozenset({"RATE_LIMIT_EXCEEDED", "rate_limited", "IP_BANNED"})
AUTH_CODES = frozenset({
    "MISSING_AUTHORIZATION", "INVALID_CREDENTIALS", "TOKEN_EXPIRED", "REMOTE_ACCESS_DENIED",
    "INSUFFICIENT_PERMISSIONS", "SETUP_REQUIRED", "ACCOUNT_LOCKED", "AUTHENTICATION_ERROR",
    "INVALID_TOKEN", "unauthorized", "account_locked", "forbidden", "setup_required",
})
_AUTH_STATUSES = (401, 403, 428)
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def split_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme in ("https", "wss") else 80
    return host, port


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Keep tokens in headers only: the session never stores KalamDB's auth cookies."""

    def set_ok(self, cookie, request):
        return False

    def return_ok(self, cookie, request):
        return False


def _retry_after(resp, body) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None and isinstance(body, dict):
        value = body.get("retry_after_seconds", body.get("retry_after"))
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _error_fields(body, raw: bytes) -> tuple[str | None, str]:
    """(code, message) of an error answer in any of KalamDB's shapes."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return err.get("code"), str(err.get("message") or "")
        if isinstance(err, str):
            return err, str(body.get("message") or "")
        return None, str(body.get("message") or "")
    return None, raw[:300].decode("utf-8", "replace").strip()


class KalamHttp:
    """HTTP client for one KalamDB server.  Holds the tokens of the last login/refresh.

    ``timeout`` is the read timeout (seconds) of every request; ``connect_timeout`` (default
    ``min(timeout, 5)``) bounds the TCP connect.  Nothing here ever blocks without a timeout."""

    def __init__(self, base_url: str, timeout: float = 10.0, connect_timeout: float | None = None,
                 token: str | None = None, pool_maxsize: int = 10):
        base_url = base_url.rstrip("/")
        if "://" not in base_url:
            base_url = "http://" + base_url
        self.base_url = base_url
        self.host, self.port = split_host_port(base_url)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout if connect_timeout is not None else min(self.timeout, 5.0))
        self._session = requests.Session()
        self._session.cookies.set_policy(_NoCookies())
        self._session.trust_env = False  # no proxies from the environment: loopback stays loopback
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._tokens: Tokens | None = None
        self._access_token: str | None = None
        if token:
            self.set_token(token)

    # -- tokens -----------------------------------------------------------------------------------
    @property
    def access_token(self) -> str | None:
        return self._access_token

    @property
    def tokens(self) -> Tokens | None:
        return self._tokens

    def set_token(self, access_token: str | None, refresh_token: str | None = None) -> None:
        register_secret(access_token)
        register_secret(refresh_token)
        self._access_token = access_token
        if refresh_token is not None:
            self._tokens = Tokens(access_token, refresh_token)

    def __repr__(self) -> str:
        user = self._tokens.user if self._tokens else None
        return f"KalamHttp({self.base_url!r}, user={user!r}, authenticated={self._access_token is not None})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport --------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _send(self, method: str, path: str, body: object = None, bearer: str | None = None,
              timeout: float | None = None):
        headers = dict(_JSON_HEADERS)
        if bearer:
            headers["Authorization"] = "Bearer " + bearer
        data = orjson.dumps(body) if body is not None else None
        read_timeout = self.timeout if timeout is None else float(timeout)
        try:
            return self._session.request(method, self.base_url + path, data=data, headers=headers,
                                         timeout=(self.connect_timeout, read_timeout),
                                         allow_redirects=False)
        except requests.exceptions.ConnectTimeout:
            raise ConnectError(f"cannot connect to {self._where()}: connect timeout after "
                               f"{self.connect_timeout:g}s", self.host, self.port) from None
        except requests.exceptions.ReadTimeout:
            raise OutcomeUnknown(f"{method} {path} to {self._where()}: no answer within "
                                 f"{read_timeout:g}s (the request was sent)") from None
        except requests.exceptions.SSLError as exc:
            raise ConnectError(f"cannot connect to {self._where()}: TLS error: {exc}",
                               self.host, self.port) from None
        except requests.exceptions.ConnectionError as exc:
            raise self._classify_connection_error(method, path, exc) from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            raise OutcomeUnknown(f"{method} {path} to {self._where()}: answer cut off ({exc})") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise ConnectError(f"cannot connect to {self._where()}: invalid URL ({exc})",
                               self.host, self.port) from None
        except requests.exceptions.RequestException as exc:
            raise OutcomeUnknown(f"{method} {path} to {self._where()}: {type(exc).__name__}: {exc}") from None

    def _classify_connection_error(self, method: str, path: str, exc: Exception):
        from urllib3.exceptions import (ConnectTimeoutError, MaxRetryError, NameResolutionError,
                                        NewConnectionError)
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        if isinstance(reason, (NewConnectionError, NameResolutionError, ConnectTimeoutError,
                               ConnectionRefusedError)):
            detail = str(reason)
            if "refused" in detail.lower():
                detail = "connection refused"
            elif isinstance(reason, NameResolutionError) or "resolve" in detail.lower():
                detail = "host name not resolved"
            elif isinstance(reason, ConnectTimeoutError):
                detail = f"connect timeout after {self.connect_timeout:g}s"
            else:
                detail = detail.split(": ", 1)[-1]
            return ConnectError(f"cannot connect to {self._where()}: {detail}", self.host, self.port)
        return OutcomeUnknown(f"{method} {path} to {self._where()}: connection lost before the answer "
                              f"({type(reason).__name__ if reason is not None else 'error'})")

    def _decode(self, resp, path: str, sql_route: bool):
        raw = resp.content
        status = resp.status_code
        try:
            body = orjson.loads(raw) if raw else None
            is_json = True
        except orjson.JSONDecodeError:
            body, is_json = None, False

        is_error = status >= 400 or (isinstance(body, dict) and body.get("status") == "error")
        if not is_error:
            if not is_json or not isinstance(body, dict):
                raise ProtocolError(f"{path}: HTTP {status} answer is not a JSON object: "
                                    f"{raw[:120]!r}", status=status)
            return body

        code, message = _error_fields(body, raw)
        if not message:
            message = f"HTTP {status} from {path}"
        if status == 429 or code in RATE_LIMIT_CODES:
            raise RateLimited(message, code=code, status=status, body=body,
                              retry_after=_retry_after(resp, body))
        if code in AUTH_CODES or (status in _AUTH_STATUSES and (not sql_route or status == 401)):
            raise AuthFailed(message, code=code, status=status, body=body)
        if sql_route and isinstance(body, dict) and body.get("status") == "error":
            raise SqlError(message, code=code, status=status, body=body)
        raise HttpError(message, code=code, status=status, body=body)

    def _call(self, method: str, path: str, body=None, bearer=None, sql_route=False, timeout=None) -> dict:
        resp = self._send(method, path, body, bearer, timeout)
        return self._decode(resp, path, sql_route)

    # -- auth routes ------------------------------------------------------------------------------
    def status(self) -> dict:
        """``GET /v1/api/auth/status`` → ``{"needs_setup": bool, "message": str}``."""
        return self._call("GET", "/v1/api/auth/status")

    def health(self) -> dict:
        """``GET /health`` (localhost only)."""
        return self._call("GET", "/health")

    def setup(self, user: str, password: str, root_password: str, email: str | None = None) -> dict:
        """First-run setup: sets root's password and creates a DBA ``user``.  Does not log in."""
        register_secret(password)
        register_secret(root_password)
        body = {"user": user, "password": password, "root_password": root_password, "email": email}
        return self._call("POST", "/v1/api/auth/setup", body)

    def _store_tokens(self, body: dict) -> Tokens:
        try:
            tokens = Tokens.from_json(body)
        except (KeyError, TypeError, AttributeError):
            raise ProtocolError("login/refresh answer without access_token") from None
        register_secret(tokens.access_token)
        register_secret(tokens.refresh_token)
        self._tokens = tokens
        self._access_token = tokens.access_token
        return tokens

    def login(self, user: str, password: str) -> Tokens:
        """``POST /v1/api/auth/login``; stores the tokens in this client."""
        register_secret(password)
        body = self._call("POST", "/v1/api/auth/login", {"user": user, "password": password})
        return self._store_tokens(body)

    def refresh(self) -> Tokens:
        """``POST /v1/api/auth/refresh`` with the stored refresh token; stores the new pair."""
        if self._tokens is None or not self._tokens.refresh_token:
            raise AuthFailed("no refresh token: log in first", code="MISSING_AUTHORIZATION")
        body = self._call("POST", "/v1/api/auth/refresh", bearer=self._tokens.refresh_token)
        return self._store_tokens(body)

    def me(self) -> dict:
        return self._call("GET", "/v1/api/auth/me", bearer=self._access_token)

    def logout(self) -> dict:
        return self._call("POST", "/v1/api/auth/logout", bearer=self._access_token)

    # -- SQL --------------------------------------------------------------------------------------
    def sql(self, sql: str, params=None, namespace: str | None = None,
            timeout: float | None = None) -> list[QueryResult]:
        """``POST /v1/api/sql``.  ``params`` bind ``$1..$n`` (null/bool/int/float/str)."""
        body = {"sql": sql}
        if params is not None:
            body["params"] = list(params)
        if namespace:
            body["namespace_id"] = namespace
        answer = self._call("POST", "/v1/api/sql", body, bearer=self._access_token, sql_route=True,
                            timeout=timeout)
        results = answer.get("results")
        if answer.get("status") != "success" or not isinstance(results, list):
            raise ProtocolError(f"/v1/api/sql: unexpected answer shape (status={answer.get('status')!r})")
        try:
            return [QueryResult.from_json(r) for r in results]
        except (AttributeError, TypeError, KeyError) as exc:
            raise ProtocolError(f"/v1/api/sql: malformed results ({exc})") from None

    def query(self, sql: str, params=None, namespace: str | None = None,
              timeout: float | None = None) -> QueryResult:
        """``sql(...)[0]`` (an empty QueryResult if the server returned no result entry)."""
        results = self.sql(sql, params, namespace, timeout)
        return results[0] if results else QueryResult()
