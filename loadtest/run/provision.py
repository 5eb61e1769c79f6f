"""Setting up one run on the server: its own namespace, tables and users, so that runs never mix.

Done once per run with the admin account given in the environment (``KALAMDB_ADMIN_USER``,
``KALAMDB_ADMIN_PASSWORD``). Idempotent: every statement is ``IF NOT EXISTS`` or tolerates "already
exists", so a retried setup does no harm.
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field

from kalamclient.errors import AuthFailed, ConnectError, HttpError, ProtocolError, RateLimited, SqlError

from .workloads import tables_for

log = logging.getLogger(__name__)


class SetupError(Exception):
    """The run could not be set up; the message says what failed and what to check (no secret in it)."""


def login_error(exc: Exception, base_url: str, user: str) -> SetupError:
    """The admin login's failure, in the words a user can act on."""
    if isinstance(exc, ConnectError):
        return SetupError(f"{base_url}: {exc} — check --host (is the server running there?)")
    if isinstance(exc, AuthFailed) and isinstance(exc.body, dict):
        return SetupError(f"{base_url}: admin login as {user!r} refused (AuthFailed: {exc.code or exc.status}) — "
                          "check KALAMDB_ADMIN_USER / KALAMDB_ADMIN_PASSWORD")
    if isinstance(exc, ProtocolError) or (isinstance(exc, HttpError) and not isinstance(exc.body, dict)):
        return SetupError(f"{base_url}: not a KalamDB server (POST /v1/api/auth/login answered "
                          f"{exc.status or 'no JSON'}) — check --host")
    return SetupError(f"{base_url}: admin login failed: {type(exc).__name__}: {exc}")


@dataclass
class Account:
    user: str
    password: str = field(repr=False)


@dataclass
class Provisioned:
    run_id: str
    namespace: str
    writers: list[Account]
    listeners: list[Account]
    tables: list
    readers: list[Account] = field(default_factory=list)  # ReaderUser (S6): role service
    probe: Account | None = None  # the S4 leak probe's subscriber: role user


def new_run_id() -> str:
    return time.strftime("%m%d%H%M%S") + secrets.token_hex(2)


def with_rate_limit_retry(call, *, attempts: int = 20, what: str = "request"):
    """Run ``call`` again after a 429 (KalamDB's rate limits), with backoff; other errors pass through."""
    delay = 0.2
    for attempt in range(attempts):
        try:
            return call()
        except RateLimited as exc:
            if attempt == attempts - 1:
                raise
            wait = exc.retry_after or delay
            log.info("%s rate-limited (%s); retrying in %.1fs", what, exc.code, wait)
            time.sleep(wait)
            delay = min(delay * 2, 2.0)


def _tolerate_exists(http, sql: str) -> None:
    try:
        with_rate_limit_retry(lambda: http.sql(sql), what="setup SQL")
    except SqlError as exc:
        if "already exists" not in (exc.message or "").lower():
            raise


def provision(http, workload: str, writers: int, listeners: int, run_id: str | None = None, *,
              readers: int = 0, probe: bool = False) -> Provisioned:
    """Create namespace, tables and users for one run. ``http`` is a KalamHttp logged in as an admin."""
    run_id = run_id or new_run_id()
    ns = f"lt_{run_id}"
    _tolerate_exists(http, f"CREATE NAMESPACE IF NOT EXISTS {ns}")
    tables = tables_for(workload, ns)
    for table in tables:
        _tolerate_exists(http, table.ddl)
    # user ids: letters, digits and '_' only ('-' breaks KILL LIVE QUERY ids, protocol §4.6)
    w_accounts = [Account(f"w{i:02d}_{run_id}", secrets.token_urlsafe(12)) for i in range(1, writers + 1)]
    l_accounts = [Account(f"h{i:02d}_{run_id}", secrets.token_urlsafe(12)) for i in range(1, listeners + 1)]
    for acc in w_accounts:
        _tolerate_exists(http, f"CREATE USER {acc.user} WITH PASSWORD '{acc.password}' ROLE service")
    r_accounts = [Account(f"r{i:02d}_{run_id}", secrets.token_urlsafe(12)) for i in range(1, readers + 1)]
    p_account = Account(f"p01_{run_id}", secrets.token_urlsafe(12)) if probe else None
    for acc in l_accounts + ([p_account] if p_account else []):
        _tolerate_exists(http, f"CREATE USER {acc.user} WITH PASSWORD '{acc.password}' ROLE user")
    for acc in r_accounts:
        _tolerate_exists(http, f"CREATE USER {acc.user} WITH PASSWORD '{acc.password}' ROLE service")
    log.info("run %s: namespace %s, %d writers, %d listeners, tables %s", run_id, ns, writers, listeners,
             [t.key for t in tables])
    return Provisioned(run_id, ns, w_accounts, l_accounts, tables, r_accounts, p_account)


def cleanup(http, prov: Provisioned) -> None:
    try:
        with_rate_limit_retry(lambda: http.sql(f"DROP NAMESPACE IF EXISTS {prov.namespace} CASCADE"), what="cleanup")
    except Exception as exc:  # cleanup must never hide the verdict
        log.warning("cleanup of namespace %s failed: %s", prov.namespace, exc)
