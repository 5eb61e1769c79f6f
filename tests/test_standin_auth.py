"""Stand-in: auth routes, JWT rules, rate limits (protocol §1.3, §2)."""
import time
import uuid

import jwt
import pytest
import requests

from standin.testing import TEST_JWT_SECRET, TEST_ROOT_PASSWORD, WsClient, WsClosed, login, sql, sql_ok

XFF_REMOTE = {"X-Forwarded-For": "203.0.113.9"}


def uniq(prefix="u"):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def make_user(url, root, role="user", pw="UserPass-123"):
    name = uniq(role[:3])
    sql_ok(url, root, f"CREATE USER {name} WITH PASSWORD '{pw}' ROLE {role}")
    return name, pw


def test_health_local_and_remote(standin):
    for path in ("/health", "/v1/api/healthcheck"):
        r = requests.get(standin.url + path, timeout=5)
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "healthy" and body["api_version"] == "v1" and body["version"] == "0.4.3-rc.4"
        assert requests.get(standin.url + path, headers=XFF_REMOTE, timeout=5).status_code == 403


def test_login_shape_and_claims(standin):
    r = requests.post(standin.url + "/v1/api/auth/login", json={"user": "root", "password": TEST_ROOT_PASSWORD})
    assert r.status_code == 200
    b = r.json()
    assert list(b) == ["user", "admin_ui_access", "expires_at", "access_token", "refresh_token", "refresh_expires_at"]
    assert b["user"]["id"] == "root" and b["user"]["role"] == "system" and b["admin_ui_access"] is True
    assert "kalamdb_auth" in r.cookies and "kalamdb_refresh" in r.cookies
    claims = jwt.decode(b["access_token"], TEST_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "root" and claims["iss"] == "kalamdb" and claims["role"] == "system"
    assert claims["token_type"] == "access" and claims["exp"] - claims["iat"] == 24 * 3600
    rc = jwt.decode(b["refresh_token"], TEST_JWT_SECRET, algorithms=["HS256"])
    assert rc["token_type"] == "refresh" and rc["exp"] - rc["iat"] == 7 * 24 * 3600
    assert TEST_ROOT_PASSWORD not in r.text


def test_login_body_rules(standin):
    u = standin.url + "/v1/api/auth/login"
    assert requests.post(u, json={"username": "root", "password": TEST_ROOT_PASSWORD}).status_code == 200
    r = requests.post(u, json={"user": "root", "password": TEST_ROOT_PASSWORD, "extra": 1})
    assert r.status_code == 400 and "unknown field" in r.text
    r = requests.post(u, json={"user": "root", "username": "root", "password": "x"})
    assert r.status_code == 400
    r = requests.post(u, json={"user": "root", "password": "wrong-password"})
    assert r.status_code == 401 and r.json() == {"error": "unauthorized", "message": "Invalid credentials"}
    r = requests.post(u, json={"user": "nobody-here", "password": "whatever1"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_sql_auth_errors(standin, root_token):
    r = sql(standin.url, None, "SELECT 1")
    assert r.status_code == 401
    b = r.json()
    assert list(b) == ["status", "error", "results", "took"]
    assert b["error"] == {"code": "MISSING_AUTHORIZATION", "message": "Authentication required"}
    r = requests.post(standin.url + "/v1/api/sql", json={"sql": "SELECT 1"}, auth=("root", TEST_ROOT_PASSWORD))
    assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_CREDENTIALS"
    bad = jwt.encode({"sub": "root", "iss": "kalamdb", "exp": int(time.time()) + 600, "iat": int(time.time()),
                      "role": "system", "token_type": "access"}, "another-secret-another-secret-xx", algorithm="HS256")
    r = sql(standin.url, bad, "SELECT 1")
    assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_CREDENTIALS"


def _token(sub, role, exp_delta, token_type="access", iss="kalamdb"):
    now = int(time.time())
    return jwt.encode({"sub": sub, "iss": iss, "exp": now + exp_delta, "iat": now - 3600, "role": role,
                       "token_type": token_type, "email": None}, TEST_JWT_SECRET, algorithm="HS256")


def test_jwt_expiry_leeway_type_role(standin, root_token):
    assert sql(standin.url, _token("root", "system", -30), "SELECT 1").status_code == 200  # within 60 s leeway
    r = sql(standin.url, _token("root", "system", -120), "SELECT 1")
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_EXPIRED"
    r = sql(standin.url, _token("root", "system", 600, token_type="refresh"), "SELECT 1")
    assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_CREDENTIALS"
    r = sql(standin.url, _token("root", "dba", 600), "SELECT 1")  # role mismatch
    assert r.status_code == 401
    r = sql(standin.url, _token("root", "system", 600, iss="evil"), "SELECT 1")
    assert r.status_code == 401
    # role change invalidates old tokens
    name, pw = make_user(standin.url, root_token, "user")
    tok = login(standin.url, name, pw)
    assert sql(standin.url, tok, "SELECT 1").status_code == 200
    sql_ok(standin.url, root_token, f"ALTER USER {name} SET ROLE service")
    assert sql(standin.url, tok, "SELECT 1").status_code == 401
    assert sql(standin.url, login(standin.url, name, pw), "SELECT 1").status_code == 200


def test_refresh_me_logout(standin):
    r = requests.post(standin.url + "/v1/api/auth/login", json={"user": "root", "password": TEST_ROOT_PASSWORD})
    b = r.json()
    r2 = requests.post(standin.url + "/v1/api/auth/refresh", headers={"Authorization": "Bearer " + b["refresh_token"]})
    assert r2.status_code == 200 and r2.json()["access_token"]
    r3 = requests.post(standin.url + "/v1/api/auth/refresh", headers={"Authorization": "Bearer " + b["access_token"]})
    assert r3.status_code == 401
    me = requests.get(standin.url + "/v1/api/auth/me", headers={"Authorization": "Bearer " + b["access_token"]})
    assert me.status_code == 200 and me.json()["user"]["id"] == "root" and me.json()["admin_ui_access"] is True
    me2 = requests.get(standin.url + "/v1/api/auth/me", cookies={"kalamdb_auth": b["access_token"]})
    assert me2.status_code == 200
    lo = requests.post(standin.url + "/v1/api/auth/logout")
    assert lo.json() == {"message": "Logged out successfully"}


def test_lockout_after_five_failures(standin, root_token):
    name, pw = make_user(standin.url, root_token)
    u = standin.url + "/v1/api/auth/login"
    for _ in range(5):
        assert requests.post(u, json={"user": name, "password": "bad-password"}).status_code == 401
    r = requests.post(u, json={"user": name, "password": pw})
    assert r.status_code == 401 and r.json()["error"] == "account_locked"


def test_setup_flow_without_root_password(standin_factory):
    s = standin_factory(root_password=None, config=None)
    st = requests.get(s.url + "/v1/api/auth/status").json()
    assert st["needs_setup"] is True
    u = s.url + "/v1/api/auth/login"
    r = requests.post(u, json={"user": "root", "password": ""})
    assert r.status_code == 428 and r.json()["error"] == "setup_required"
    assert requests.post(u, json={"user": "root", "password": "anything1"}).status_code == 401
    assert requests.post(u, json={"user": "root", "password": ""}, headers=XFF_REMOTE).status_code == 403
    su = s.url + "/v1/api/auth/setup"
    body = {"user": "admin", "password": "AdminPass123!", "root_password": "RootPass123!", "email": None}
    assert requests.post(su, json=body, headers=XFF_REMOTE).status_code == 403
    r = requests.post(su, json={**body, "password": "short"})
    assert r.status_code == 400 and r.json()["error"] == "weak_password"
    r = requests.post(su, json={**body, "password": "password123"})
    assert r.status_code == 400 and r.json()["error"] == "weak_password"
    r = requests.post(su, json={**body, "user": "root"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_user"
    assert requests.post(su, json={**body, "bogus": 1}).status_code == 400
    r = requests.post(su, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["role"] == "dba" and r.json()["user"]["id"] == "admin"
    r = requests.post(su, json=body)
    assert r.status_code == 409 and r.json()["error"] == "already_configured"
    assert requests.get(s.url + "/v1/api/auth/status").json()["needs_setup"] is False
    assert login(s.url, "admin", "AdminPass123!")
    assert login(s.url, "root", "RootPass123!")


def test_auth_rate_limit_http_and_ws(standin_factory):
    s = standin_factory(env={"KALAMDB_RATE_LIMIT_AUTH_REQUESTS_PER_IP_PER_SEC": "3"})
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    codes = [requests.post(s.url + "/v1/api/auth/login", json={"user": "root", "password": TEST_ROOT_PASSWORD}).status_code
             for _ in range(6)]
    assert 429 in codes
    r = requests.post(s.url + "/v1/api/auth/login", json={"user": "root", "password": TEST_ROOT_PASSWORD})
    if r.status_code == 429:
        assert r.json()["error"] == "rate_limited"
    # a different (forwarded) IP has its own bucket
    assert requests.post(s.url + "/v1/api/auth/login", json={"user": "root", "password": TEST_ROOT_PASSWORD},
                         headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 200
    got_limited = False
    for _ in range(6):
        c = WsClient(s.ws_url, tok)
        m = c.recv(timeout=2)
        if m and m["type"] == "auth_error":
            assert m["message"] == "Too many authentication attempts. Please retry shortly."
            with pytest.raises(WsClosed) as ei:
                c.recv(timeout=2)
            assert ei.value.code == 1008
            got_limited = True
            break
        c.close()
    assert got_limited
