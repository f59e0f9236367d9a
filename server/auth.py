"""Who may call the collector's HTTP API: bearer tokens with roles, and signed model URLs for the boards.

Roles, each including the one before (docs/fleet.md, "Authentication"):
    read    results, devices, models, jobs, dead letters, metrics, the OpenAPI document, gates evaluated
    submit  upload models, push jobs, cancel jobs, record gate verdicts
    admin   tokens

A token is ``ebt_`` and 43 characters of a 256-bit random secret (``secrets.token_urlsafe(32)``), shown once when
made; the registry keeps only its SHA-256. A slow password hash (bcrypt, argon2) protects guessable passwords; a
256-bit random token cannot be guessed, so a plain digest is as safe and lets the collector find a token by its
hash in one indexed lookup (PyPI's and GitHub's API tokens are kept the same way).

Boards download models without a token: the job carries a model URL signed by the collector (HMAC-SHA256 over the
sha256 and an expiry, with a key every collector of the registry shares), good for SIGNED_URL_TTL_S.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Optional

ROLES = ("read", "submit", "admin")
TOKEN_PREFIX = "ebt_"
SIGNED_URL_TTL_S = 30 * 86400  # a queued job may wait this long for an offline board
SIGNING_SECRET = "model-url-signing-key"
FIRST_ADMIN = "admin"  # the name of the token a fresh server makes


class Refused(Exception):
    """401 (no or unknown token) or 403 (a token whose role is too low), with the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Caller:
    name: str  # the token's name; "anonymous" without auth; "signed-url" for a board's model download
    role: str


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def allows(have: str, need: str) -> bool:
    return ROLES.index(have) >= ROLES.index(need)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Checks a request's ``Authorization: Bearer`` token (or a model URL's signature) against the registry."""

    def __init__(self, registry, enabled: bool = True):
        self.registry, self.enabled = registry, enabled
        self._key = registry.secret(SIGNING_SECRET, lambda: secrets.token_hex(32)).encode()
        self._last_used: dict[str, float] = {}

    def caller(self, authorization: Optional[str], need: str) -> Caller:
        """The caller a request's Authorization header names, if its role is at least ``need``; else Refused."""
        if not self.enabled:
            return Caller("anonymous", "admin")
        scheme, _, token = (authorization or "").strip().partition(" ")
        if not authorization:
            raise Refused(401, f"this route needs a token with the {need} role: send 'Authorization: Bearer TOKEN'")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "the Authorization header must be 'Bearer TOKEN'")
        found = self.registry.token_by_hash(token_hash(token.strip()))
        if found is None:
            raise Refused(401, "unknown or revoked token")
        if not allows(found["role"], need):
            raise Refused(403, f"token {found['name']!r} has the {found['role']} role; this route needs {need}")
        self._note_use(found["name"])
        return Caller(found["name"], found["role"])

    def _note_use(self, name: str) -> None:
        """``last_used`` in the registry, at most once a minute per token (not a write per request)."""
        now = time.monotonic()
        if now - self._last_used.get(name, -1e9) >= 60:
            self._last_used[name] = now
            self.registry.token_used(name)

    # ------------------------------------------------------------ signed model URLs

    def _signature(self, sha256: str, expires: int) -> str:
        return hmac.new(self._key, f"{sha256}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, sha256: str, now: Optional[float] = None) -> str:
        """The query string that lets a board fetch this model without a token."""
        expires = int((now if now is not None else time.time()) + SIGNED_URL_TTL_S)
        return urllib.parse.urlencode({"expires": expires, "sig": self._signature(sha256, expires)})

    def signed(self, sha256: str, expires: Optional[str], sig: Optional[str]) -> bool:
        if not (expires and sig and expires.isascii() and expires.isdigit() and len(expires) <= 12
                and sig.isascii()):  # hmac.compare_digest raises TypeError on a non-ASCII str
            return False
        return int(expires) >= time.time() and hmac.compare_digest(self._signature(sha256, int(expires)), sig)


def first_admin_token(registry, path) -> Optional[str]:
    """A fresh registry (no token at all) gets an admin token, written to ``path`` (mode 0600); returns it, or None
    when the registry has tokens already."""
    import os

    if registry.tokens():
        return None
    token = new_token()
    if not registry.add_token(FIRST_ADMIN, "admin", token_hash(token)):
        return None  # another collector of this registry made it first
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token
