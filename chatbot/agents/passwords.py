"""Password hashing with argon2id (argon2-cffi), plus the password policy.

Parameters follow OWASP's Password Storage Cheat Sheet for argon2id (19 MiB, 2 passes,
1 lane): a login costs about 90 ms of one core against about 700 ms for argon2-cffi's
default profile on the 2-core dev box (``bench/console_login.py``), so a burst of logins
cannot starve the chat streams, while an offline guess still costs 19 MiB of memory.
Hashes made with other parameters are upgraded at the next successful login
(:func:`needs_rehash`).
"""

from __future__ import annotations

import logging

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chatbot.errors import ChatbotError

log = logging.getLogger(__name__)

MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 handles any length; the cap stops a 10 MB "password" DoS.

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)

# Verified against when the email is unknown, so a login for a missing account costs
# the same time as a wrong password and does not reveal which emails exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password-0123456789")


class WeakPasswordError(ChatbotError):
    """A new password that does not meet the policy."""

    code = "weak_password"


def check_policy(password: str, *, email: str = "") -> None:
    """Raise ``WeakPasswordError`` when ``password`` is too weak to set."""
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPasswordError(f"password must be at most {MAX_LENGTH} characters")
    if password.strip() != password or not password.strip():
        raise WeakPasswordError("password must not start or end with whitespace")
    if email and password.lower() == email.lower():
        raise WeakPasswordError("password must not be the email address")
    if len(set(password)) < 4:
        raise WeakPasswordError("password must use at least 4 different characters")


def hash_password(password: str) -> str:
    """The argon2id PHC string for ``password`` (a fresh random salt each call)."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; never raises on bad input.

    ``stored_hash=None`` (unknown account) still spends one argon2 verification.
    """
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        log.warning("stored password hash is not a valid argon2 hash")
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's and should be redone."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
