"""Passwords, JWTs (HS256, PyJWT) and token buckets."""
from __future__ import annotations

import hashlib
import hmac
import os
import time

import jwt

ROLES = ("anonymous", "user", "service", "dba", "system")
ROLE_WORDS = {
    "dba": "dba", "admin": "dba",
    "service": "service", "developer": "service", "analyst": "service",
    "user": "user", "viewer": "user", "readonly": "user",
    "system": "system",
}
ADMIN_ROLES = ("dba", "system")
PBKDF2_ITERATIONS = 1000  # a test server: cheap on purpose

COMMON_PASSWORDS = {
    "password", "password1", "password123", "12345678", "123456789", "1234567890", "qwerty123",
    "qwertyuiop", "iloveyou", "11111111", "00000000", "abc12345", "letmein1", "welcome1",
    "admin123", "adminadmin", "passw0rd", "password!", "changeme", "sunshine",
}


def hash_password(pw: str) -> str:
    salt = os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, PBKDF2_ITERATIONS)
    return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${salt.hex()}${dk.hex()}"


def verify_password(pw: str, stored: str) -> bool:
    if not stored:
        return False  # an empty hash never verifies
    try:
        algo, iters, salt, dk = stored.split("$")
        if algo != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", pw.encode(), bytes.fromhex(salt), int(iters))
        return hmac.compare_digest(got.hex(), dk)
    except (ValueError, TypeError):
        return False


def validate_password(pw: str) -> str | None:
    """Returns an error message or None (KalamDB validate_password: 8..72, no common password)."""
    if not isinstance(pw, str) or len(pw) < 8:
        return "Password must be at least 8 characters long"
    if len(pw) > 72:
        return "Password must be at most 72 characters long"
    if pw.lower() in COMMON_PASSWORDS:
        return "Password is too common"
    return None


class TokenError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class JwtCodec:
    def __init__(self, secret: str, expiry_hours: float):
        self._secret = secret
        self.expiry_s = expiry_hours * 3600.0

    def __repr__(self):
        return "JwtCodec(<secret hidden>)"

    def issue(self, user_id: str, role: str, email: str | None, token_type: str, now: float | None = None):
        now = int(now if now is not None else time.time())
        life = self.expiry_s * (7 if token_type == "refresh" else 1)
        exp = now + int(life)
        claims = {"sub": user_id, "iss": "kalamdb", "exp": exp, "iat": now, "email": email,
                  "role": role, "token_type": token_type}
        return jwt.encode(claims, self._secret, algorithm="HS256"), exp

    def decode(self, token: str) -> dict:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], leeway=60,
                                options={"require": ["sub", "exp"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("TOKEN_EXPIRED", "Token expired") from None
        except jwt.PyJWTError:
            raise TokenError("INVALID_CREDENTIALS", "Invalid credentials") from None
        if claims.get("iss") != "kalamdb":
            raise TokenError("INVALID_CREDENTIALS", "Untrusted token issuer")
        return claims


class TokenBucket:
    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float):
        self.rate = float(rate)
        self.capacity = max(1.0, float(rate))
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        t = self.tokens + (now - self.stamp) * self.rate
        if t > self.capacity:
            t = self.capacity
        self.stamp = now
        if t >= 1.0:
            self.tokens = t - 1.0
            return True
        self.tokens = t
        return False


class BucketMap:
    """Keyed token buckets (per user id / per IP)."""

    def __init__(self, rate: float):
        self.rate = rate
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> bool:
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) > 10000:
                self.buckets.clear()
            b = self.buckets[key] = TokenBucket(self.rate)
        return b.take()
