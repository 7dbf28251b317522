"""Who may use the on-call console, and how a browser proves it. Pure.

Users come from a YAML file: a name, the services whose alerts they see (paediatric, adult, or
both) and, unless a trusted reverse proxy authenticates them, a password hash made by
`plateletwatch hash-password` (PBKDF2-SHA256; the file never holds a password). A signed-in
browser holds a session cookie signed under the session keys with the session salt (so neither
a link nor a session token passes for the other) and naming a row in the store, which sign-out
deletes; every form it posts carries a CSRF token derived from that session, which another site
cannot read or forge.
"""

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from schemas import Population
from services.notifier.domain.links import SESSION_SALT, Keys, TokenRefused, sign, unsign

PBKDF2_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
MIN_PASSWORD_LENGTH = 12
_SCHEME = "pbkdf2_sha256"


class ConsoleUsersError(ValueError):
    """The users file cannot be used: says which entry and why."""


class ConsoleUser(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^\S+$")]
    services: tuple[Population, ...] = Field(min_length=1)
    password_hash: str | None = Field(
        default=None, description="From `plateletwatch hash-password`; none: proxy sign-in only."
    )


class _UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: tuple[ConsoleUser, ...]


def load_console_users(path: Path) -> dict[str, ConsoleUser]:
    try:
        parsed = _UsersFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ConsoleUsersError(f"console users file {path}: {error}") from error
    users: dict[str, ConsoleUser] = {}
    for user in parsed.users:
        if user.name in users:
            raise ConsoleUsersError(f"console users file {path}: {user.name} appears twice")
        if user.password_hash is not None and not user.password_hash.startswith(_SCHEME + "$"):
            raise ConsoleUsersError(
                f"console users file {path}: {user.name}'s password_hash is not one "
                "`plateletwatch hash-password` made"
            )
        users[user.name] = user
    return users


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "$".join((_SCHEME, str(iterations), _b64(salt), _b64(derived)))


def password_matches(password: str, encoded: str | None) -> bool:
    """Constant-time check; False for a user without a password or a hash not ours."""
    try:
        scheme, iterations, salt, expected = (encoded or "").split("$")
        if scheme != _SCHEME:
            return False
        derived = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(iterations)
        )
        return hmac.compare_digest(derived, base64.b64decode(expected))
    except ValueError:
        return False


@dataclass(frozen=True)
class Session:
    id: str  # the key of its row in the store, which sign-out deletes
    user: str
    expires_at: datetime
    token: str  # the cookie's value; the CSRF token is derived from it

    @property
    def csrf_token(self) -> str:
        return _b64(hmac.new(b"csrf", self.token.encode(), hashlib.sha256).digest())[:32]

    def accepts(self, csrf_token: str) -> bool:
        return hmac.compare_digest(csrf_token.encode(), self.csrf_token.encode())


def start_session(keys: Keys, user: str, now: datetime, lifetime: timedelta) -> Session:
    """A new session with its own random id, signed with the first key; it counts only once
    the store holds its row."""
    expires = int((now + lifetime).timestamp())
    session_id = secrets.token_urlsafe(16)
    payload = {"u": user, "e": expires, "n": session_id}
    return Session(
        session_id, user, datetime.fromtimestamp(expires, UTC), sign(keys, SESSION_SALT, payload)
    )


def session_from(keys: Keys, token: str, now: datetime) -> Session | None:
    """The session a genuine (under any of `keys`), unexpired cookie claims; None otherwise.
    Whether it was ended (signed out) only the store knows."""
    try:
        payload = unsign(keys, SESSION_SALT, token)
        expires = datetime.fromtimestamp(int(payload["e"]), UTC)
        session = Session(str(payload["n"]), str(payload["u"]), expires, token)
    except (TokenRefused, KeyError, TypeError, ValueError):
        return None
    return session if now < session.expires_at else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
