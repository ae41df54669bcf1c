"""Password hashes: argon2id through argon2-cffi (RFC 9106; OWASP's first choice), never hand-rolled.

argon2-cffi's defaults (RFC 9106's second recommended profile: 64 MiB, 3 passes) make a check cost tens of
milliseconds on purpose: that is what makes a stolen table expensive to guess at. Callers that check the same
credentials often (HTTP Basic on every DICOMweb request) remember a success instead (``auth.users``)."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()
MIN_LENGTH = 8
MAX_LENGTH = 1024  # a longer "password" only costs the server hashing time


@cache
def _dummy() -> str:
    """A hash of nothing anyone knows: an unknown user name costs as much as a wrong password, so the time a
    refusal takes does not tell which user names exist. Made at the first check, not at import: every process
    and command imports this module, few check a password (one hash is ~0.1 s of CPU)."""
    return _HASHER.hash("not a password of anyone")


def check_strength(password: str) -> None:
    """Raise ValueError for a password too short or too long to be accepted."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"a password may have at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_strength(password)
    return _HASHER.hash(password)


def verify(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; with no hash (unknown user) the same work is done and
    the answer is no."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored_hash or _dummy(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's (rehashed at the next login)."""
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
