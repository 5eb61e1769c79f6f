"""Server settings: KalamDB's server.toml keys (protocol §1.4), code defaults and env overrides."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

DEFAULT_JWT_SECRET = "CHANGE_ME_IN_PRODUCTION"
SERVER_VERSION = "0.4.3-rc.4"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 0
    # rate_limit
    max_queries_per_sec: float = 100
    max_messages_per_sec: float = 50
    max_subscriptions_per_user: int = 10
    max_auth_requests_per_ip_per_sec: float = 20
    # limits
    max_query_limit: int = 1000
    default_query_limit: int = 50
    # websocket
    client_timeout_secs: float = 10
    auth_timeout_secs: float = 3
    heartbeat_interval_secs: float = 5
    # a stand-in key: KalamDB's per-connection notification channel is a constant, 128
    # (kdb-live NOTIFICATION_CHANNEL_CAPACITY, protocol §5.8); KalamDB ignores the key
    notification_channel_capacity: int = 128
    # a stand-in key: SO_SNDBUF of each WebSocket connection's socket (None: the kernel's, autotuned up to
    # net.ipv4.tcp_wmem's maximum, 4 MiB here). With it small, what a slow reader does not read waits in
    # the notification channel instead of the kernel, so the channel fills at a rate any machine reaches
    ws_send_buffer_bytes: int | None = None
    # auth
    jwt_secret: str = field(default=DEFAULT_JWT_SECRET, repr=False)
    jwt_expiry_hours: float = 24
    root_password: str | None = field(default=None, repr=False)
    allow_remote_setup: bool = False
    # performance
    max_connections: int = 25000
    # security
    max_ws_message_size: int = 1024 * 1024
    # logging: the server log goes to <logs_path>/server.log only when this is set (KALAMDB_LOGS_DIR,
    # [logging] logs_path or --logs-dir); KalamDB's default "./logs" is not assumed
    logs_path: str | None = None
    # raw config (for system.settings); secrets removed
    raw: dict = field(default_factory=dict, repr=False)

    def public_items(self) -> list[tuple[str, str, str]]:
        """(name, value, category) for system.settings, secrets excluded."""
        out = []
        for cat, key in (
            ("rate_limit", "max_queries_per_sec"), ("rate_limit", "max_messages_per_sec"),
            ("rate_limit", "max_subscriptions_per_user"), ("rate_limit", "max_auth_requests_per_ip_per_sec"),
            ("limits", "max_query_limit"), ("limits", "default_query_limit"),
            ("websocket", "client_timeout_secs"), ("websocket", "auth_timeout_secs"),
            ("websocket", "heartbeat_interval_secs"), ("websocket", "notification_channel_capacity"),
            ("auth", "jwt_expiry_hours"),
            ("auth", "allow_remote_setup"), ("performance", "max_connections"),
            ("security", "max_ws_message_size"),
        ):
            out.append((f"{cat}.{key}", str(getattr(self, key)), cat))
        return out


def _num(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"config key {name} must be a number")
    return v


def load_settings(path: str | None, env: dict | None = None) -> Settings:
    env = os.environ if env is None else env
    s = Settings()
    data: dict = {}
    if path:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    s.raw = data
    srv = data.get("server", {})
    if "host" in srv:
        s.host = str(srv["host"])
    rl = data.get("rate_limit", {})
    for key in ("max_queries_per_sec", "max_messages_per_sec", "max_auth_requests_per_ip_per_sec"):
        if key in rl:
            setattr(s, key, _num(rl[key], key))
    if "max_subscriptions_per_user" in rl:
        s.max_subscriptions_per_user = int(_num(rl["max_subscriptions_per_user"], "max_subscriptions_per_user"))
    lim = data.get("limits", {})
    for key in ("max_query_limit", "default_query_limit"):
        if key in lim:
            setattr(s, key, int(_num(lim[key], key)))
    ws = data.get("websocket", {})
    for key in ("client_timeout_secs", "auth_timeout_secs", "heartbeat_interval_secs"):
        if key in ws:
            setattr(s, key, _num(ws[key], key))
    if "notification_channel_capacity" in ws:
        cap = ws["notification_channel_capacity"]
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError("config key notification_channel_capacity must be an integer >= 1")
        s.notification_channel_capacity = cap
    if "send_buffer_bytes" in ws:
        n = ws["send_buffer_bytes"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1024:
            raise ValueError("config key send_buffer_bytes must be an integer >= 1024")
        s.ws_send_buffer_bytes = n
    lg = data.get("logging", {})
    if lg.get("logs_path"):
        s.logs_path = str(lg["logs_path"])
    auth = data.get("auth", data.get("authentication", {}))
    if "jwt_secret" in auth:
        s.jwt_secret = str(auth["jwt_secret"])
    if "jwt_expiry_hours" in auth:
        s.jwt_expiry_hours = _num(auth["jwt_expiry_hours"], "jwt_expiry_hours")
    if auth.get("root_password"):
        s.root_password = str(auth["root_password"])
    if "allow_remote_setup" in auth:
        s.allow_remote_setup = bool(auth["allow_remote_setup"])
    perf = data.get("performance", {})
    if "max_connections" in perf:
        s.max_connections = int(perf["max_connections"])
    sec = data.get("security", {})
    if "max_ws_message_size" in sec:
        s.max_ws_message_size = int(sec["max_ws_message_size"])

    # env overrides (KalamDB's override.rs + lifecycle.rs)
    def envnum(name, attr, conv=float):
        v = env.get(name)
        if v not in (None, ""):
            setattr(s, attr, conv(v))

    if env.get("KALAMDB_JWT_SECRET"):
        s.jwt_secret = env["KALAMDB_JWT_SECRET"]
    if env.get("KALAMDB_ROOT_PASSWORD"):
        s.root_password = env["KALAMDB_ROOT_PASSWORD"]
    if env.get("KALAMDB_LOGS_DIR"):
        s.logs_path = env["KALAMDB_LOGS_DIR"]
    envnum("KALAMDB_JWT_EXPIRY_HOURS", "jwt_expiry_hours")
    envnum("KALAMDB_WEBSOCKET_CLIENT_TIMEOUT_SECS", "client_timeout_secs")
    envnum("KALAMDB_WEBSOCKET_AUTH_TIMEOUT_SECS", "auth_timeout_secs")
    envnum("KALAMDB_WEBSOCKET_HEARTBEAT_INTERVAL_SECS", "heartbeat_interval_secs")
    envnum("KALAMDB_RATE_LIMIT_AUTH_REQUESTS_PER_IP_PER_SEC", "max_auth_requests_per_ip_per_sec")
    if env.get("KALAMDB_ALLOW_REMOTE_SETUP"):
        s.allow_remote_setup = env["KALAMDB_ALLOW_REMOTE_SETUP"].lower() in ("1", "true", "yes")
    if s.default_query_limit > s.max_query_limit:
        raise ValueError("default_query_limit must be <= max_query_limit")
    if s.heartbeat_interval_secs <= 0:
        s.heartbeat_interval_secs = 5
    return s
