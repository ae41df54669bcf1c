"""User accounts and their credentials: passwords, API tokens, web sessions (issue 12).

Who a request comes from is decided here, from what the HTTP layer found in it (``web.auth``); the HTTP layer
decides what that user may do with the role's permissions (``auth.roles``).

- Passwords: argon2id hashes (``auth.passwords``). A successful check of a user name + password is remembered
  for ``REMEMBER_BASIC`` seconds under a SHA-256 of both (HTTP Basic sends them with every request; an argon2
  check each time would cost tens of ms per DICOMweb frame); the user row is still read every time, so a
  disabled user or a changed password is refused at once.
- API tokens: ``hf_`` + 43 characters of a 256-bit random value; only their SHA-256 is stored. Revoked or expired
  tokens and tokens of disabled users are refused on their next use.
- Web sessions: the cookie holds another such random value; the row holds its digest, a CSRF token, the
  user's generation (a password change or a disable ends every session) and both expiries (idle, absolute).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, select, update

from hounsfield.auth import passwords
from hounsfield.auth.models import ApiToken, User, WebSession
from hounsfield.auth.roles import ROLES, permissions_of
from hounsfield.db import Database
from hounsfield.errors import Conflict, InvalidQuery, NotFound

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
TOKEN_PREFIX = "hf_"
REMEMBER_BASIC = 300.0  # seconds a checked user name + password is taken without argon2 again
TOUCH_EVERY = timedelta(seconds=60)  # a session's or token's last use is written at most this often
MAX_ID = 2**63 - 1  # the largest row id SQLite and PostgreSQL (BIGINT) hold


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes (stored as UTC): make them comparable with ``utcnow``."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the user, the role's permissions, and how the user was recognised."""

    user_id: int
    name: str
    role: str
    via: str  # "session", "token" or "basic"
    csrf_token: str = ""  # sessions only: what a state-changing request must carry besides the cookie

    @property
    def permissions(self) -> frozenset[str]:
        return permissions_of(self.role)


@dataclass(frozen=True)
class NewSession:
    cookie: str
    csrf_token: str
    expires_at: datetime


def _check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise InvalidQuery("a user name is 1 to 64 letters, digits or . _ @ - and starts with a letter or digit")
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidQuery(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    return role


def _strong(password: str) -> str:
    try:
        passwords.check_strength(password)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from exc
    return password


def _user_record(user: User, tokens: int = 0) -> dict[str, Any]:
    return {"name": user.name, "role": user.role, "disabled": user.disabled,
            "created_at": _aware(user.created_at).isoformat(), "tokens": tokens}


class Users:
    """The accounts in the index database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._basic: dict[str, tuple[float, int, int]] = {}  # digest → (when checked, user id, generation)
        self._lock = threading.Lock()

    # ---- accounts ----
    def add(self, name: str, role: str, password: str) -> dict[str, Any]:
        _check_name(name), _check_role(role), _strong(password)
        with self.db.session() as s:
            if s.scalar(select(User.id).where(func.lower(User.name) == name.lower())) is not None:
                raise Conflict(f"user {name!r} exists already")
            user = User(name=name, role=role, password_hash=passwords.hash_password(password), disabled=False,
                        generation=0)
            s.add(user)
            s.flush()
            return _user_record(user)

    def all(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            counts = {user: n for user, n in s.execute(
                select(ApiToken.user_fk, func.count()).where(ApiToken.revoked_at.is_(None)).group_by(ApiToken.user_fk))}
            return [_user_record(u, counts.get(u.id, 0)) for u in s.scalars(select(User).order_by(User.name))]

    def get(self, name: str) -> dict[str, Any]:
        with self.db.session() as s:
            return _user_record(self._user(s, name))

    def _user(self, s: Any, name: str) -> User:
        user = s.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user {name!r}")
        return user

    def _new_generation(self, s: Any, user: User) -> None:
        """Credentials changed: end the user's sessions and forget remembered Basic checks."""
        user.generation += 1
        s.execute(delete(WebSession).where(WebSession.user_fk == user.id))

    def set_password(self, name: str, password: str) -> None:
        _strong(password)
        with self.db.session() as s:
            user = self._user(s, name)
            user.password_hash = passwords.hash_password(password)
            self._new_generation(s, user)

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        _check_role(role)
        with self.db.session() as s:
            user = self._user(s, name)
            user.role = role
            self._new_generation(s, user)
            return _user_record(user)

    def set_disabled(self, name: str, disabled: bool) -> dict[str, Any]:
        with self.db.session() as s:
            user = self._user(s, name)
            user.disabled = disabled
            self._new_generation(s, user)
            return _user_record(user)

    def has_admin(self) -> bool:
        """Whether an enabled user holds the admin role (``serve`` refuses to start with logins on without)."""
        with self.db.session() as s:
            return s.scalar(select(User.id).where(User.role == "admin", User.disabled.is_(False)).limit(1)) \
                is not None

    # ---- tokens ----
    def create_token(self, name: str, *, label: str = "", expires_in: timedelta | None = None) -> tuple[int, str]:
        """A new API token of ``name``: its id (to revoke it) and the token, shown once and never stored."""
        if len(label) > 64:
            raise InvalidQuery("a token label has at most 64 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as s:
            user = self._user(s, name)
            row = ApiToken(user_fk=user.id, digest=digest(token), label=label,
                           expires_at=utcnow() + expires_in if expires_in else None)
            s.add(row)
            s.flush()
            return row.id, token

    def tokens(self, name: str) -> list[dict[str, Any]]:
        with self.db.session() as s:
            user = self._user(s, name)
            rows = s.scalars(select(ApiToken).where(ApiToken.user_fk == user.id).order_by(ApiToken.id))
            return [{"id": t.id, "label": t.label, "created_at": _aware(t.created_at).isoformat(),
                     "expires_at": t.expires_at and _aware(t.expires_at).isoformat(),
                     "revoked": t.revoked_at is not None,
                     "last_used_at": t.last_used_at and _aware(t.last_used_at).isoformat()} for t in rows]

    def revoke_token(self, token_id: int) -> str:
        """Revoke a token by its id; returns its user's name. An id beyond the database's integers names no
        token (SQLite's driver raised OverflowError for it: a 500 over REST, found by tests/test_fuzz_http.py)."""
        if not 1 <= token_id <= MAX_ID:
            raise NotFound(f"no token {token_id}")
        with self.db.session() as s:
            row = s.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no token {token_id}")
            row.revoked_at = row.revoked_at or utcnow()
            return s.get(User, row.user_fk).name

    # ---- recognising a request's user ----
    def by_password(self, name: str, password: str) -> Principal | None:
        """The user whose name and password these are (enabled), or None. Always as slow as one argon2
        check, whether the user exists or not."""
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.name == name)) if NAME.fullmatch(name or "") else None
            ok = passwords.verify(user.password_hash if user else None, password)
            if not ok or user is None or user.disabled:
                return None
            if passwords.needs_rehash(user.password_hash):
                user.password_hash = passwords.hash_password(password)
            return Principal(user.id, user.name, user.role, "password")

    def by_basic(self, name: str, password: str) -> Principal | None:
        """As ``by_password`` for HTTP Basic: a success is remembered (see the module's docstring)."""
        key = digest(f"{name}\0{password}")
        now = time.monotonic()
        with self._lock:
            known = self._basic.get(key)
        if known is not None and now - known[0] < REMEMBER_BASIC:
            with self.db.session() as s:
                user = s.get(User, known[1])
                if user is not None and not user.disabled and user.generation == known[2]:
                    return Principal(user.id, user.name, user.role, "basic")
        found = self.by_password(name, password)
        with self._lock:
            if len(self._basic) > 10000:
                self._basic.clear()
            if found is None:
                self._basic.pop(key, None)
                return None
            with self.db.session() as s:
                generation = s.get(User, found.user_id).generation
            self._basic[key] = (now, found.user_id, generation)
        return Principal(found.user_id, found.name, found.role, "basic")

    def by_token(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        now = utcnow()
        with self.db.session() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.digest == digest(token)))
            if row is None or row.revoked_at is not None or (row.expires_at and _aware(row.expires_at) <= now):
                return None
            user = s.get(User, row.user_fk)
            if user is None or user.disabled:
                return None
            if row.last_used_at is None or now - _aware(row.last_used_at) > TOUCH_EVERY:
                row.last_used_at = now
            return Principal(user.id, user.name, user.role, "token")

    # ---- web sessions ----
    def start_session(self, principal: Principal, *, address: str, idle: timedelta,
                      lifetime: timedelta) -> NewSession:
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + min(idle, lifetime)
        with self.db.session() as s:
            user = s.get(User, principal.user_id)
            s.execute(delete(WebSession).where(WebSession.expires_at < now))  # the expired ones, by the way
            s.add(WebSession(digest=digest(cookie), user_fk=user.id, generation=user.generation, csrf_token=csrf,
                             address=address[:64], created_at=now, last_seen_at=now, expires_at=expires))
        return NewSession(cookie, csrf, expires)

    def by_session(self, cookie: str, *, idle: timedelta, lifetime: timedelta) -> Principal | None:
        """The user of a session cookie, or None once it has expired (idle or absolute) or its user's
        credentials changed. A use moves the idle expiry on (written at most every ``TOUCH_EVERY``)."""
        if not cookie or len(cookie) > 128:
            return None
        now = utcnow()
        with self.db.session() as s:
            row = s.get(WebSession, digest(cookie))
            if row is None:
                return None
            user = s.get(User, row.user_fk)
            if _aware(row.expires_at) <= now or user is None or user.disabled or user.generation != row.generation:
                s.delete(row)
                return None
            if now - _aware(row.last_seen_at) > TOUCH_EVERY:
                row.last_seen_at = now
                row.expires_at = min(now + idle, _aware(row.created_at) + lifetime)
            return Principal(user.id, user.name, user.role, "session", row.csrf_token)

    def end_session(self, cookie: str) -> None:
        with self.db.session() as s:
            s.execute(delete(WebSession).where(WebSession.digest == digest(cookie)))

    def expire_sessions_of(self, name: str) -> int:
        """End every session of ``name`` now (an admin's "log out everywhere")."""
        with self.db.session() as s:
            user = self._user(s, name)
            return s.execute(update(WebSession).where(WebSession.user_fk == user.id)
                             .values(expires_at=utcnow())).rowcount


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison (a CSRF token)."""
    return bool(a) and hmac.compare_digest(a.encode(), b.encode())
