"""Signed, expiring tokens: the action links in pages, and console sessions. Pure.

A token is a URL-safe JSON payload signed by itsdangerous (HMAC-SHA256) under a list of keys and
a salt naming its purpose, so a link never passes for a session nor a session for a link, even
under the same key. The first key signs and any listed key is accepted: to rotate, put a new key
first and drop the old one once what it signed has expired. A link holds the alert id (opaque,
no PHI), the action, the role it was sent to, its expiry and a nonce: a forged or altered link
fails the signature, an old one its expiry, and the store refuses a nonce used before, so a link
works once.
"""

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, Signer

from schemas import AckAction

Keys = bytes | Sequence[bytes]  # one key, or several: the first signs, any is accepted
LINK_SALT = "plateletwatch.action-link"
SESSION_SALT = "plateletwatch.console-session"


@dataclass(frozen=True)
class LinkClaim:
    alert_id: str
    action: AckAction
    recipient: str  # the roster role the page went to, recorded as who acted
    expires_at: datetime
    nonce: str


class LinkRefused(Exception):
    """Why a link is not honoured, in words safe to log and to show (no PHI)."""


class TokenRefused(ValueError):
    """The token was not signed under these keys for this purpose, or was altered since."""


def sign_link(
    keys: Keys,
    alert_id: str,
    action: AckAction,
    recipient: str,
    now: datetime,
    valid_for: timedelta,
) -> str:
    """A URL-safe token for one action on one alert, signed with the first key."""
    payload = {
        "a": alert_id,
        "x": action.value,
        "r": recipient,
        "e": int((now + valid_for).timestamp()),
        "n": secrets.token_urlsafe(12),
    }
    return sign(keys, LINK_SALT, payload)


def verify_link(keys: Keys, token: str, now: datetime) -> LinkClaim:
    """The claim a genuine, unexpired token makes under any of `keys`; LinkRefused otherwise."""
    try:
        payload = unsign(keys, LINK_SALT, token)
    except TokenRefused as error:
        raise LinkRefused("the link is not genuine") from error
    try:
        claim = LinkClaim(
            alert_id=str(payload["a"]),
            action=AckAction(payload["x"]),
            recipient=str(payload["r"]),
            expires_at=datetime.fromtimestamp(int(payload["e"]), UTC),
            nonce=str(payload["n"]),
        )
    except (ValueError, KeyError, TypeError) as error:  # signed by us, so a bug: say so
        raise LinkRefused("the link is malformed") from error
    if now >= claim.expires_at:
        raise LinkRefused("the link has expired")
    return claim


def sign(keys: Keys, salt: str, payload: dict[str, Any]) -> str:
    """`payload` as a URL-safe token for the purpose `salt`, signed with the first key."""
    body = base64.urlsafe_b64encode(
        json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    )
    return _signer(keys, salt).sign(body.rstrip(b"=")).decode()


def unsign(keys: Keys, salt: str, token: str) -> dict[str, Any]:
    """The payload of a token signed for `salt` under any of `keys`, or signed before purposes
    had salts (see _unsalted); TokenRefused otherwise."""
    try:
        try:
            body = _signer(keys, salt).unsign(token.encode())
        except BadSignature:
            body = _unsalted(keys).unsign(token.encode())
        payload = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    except (BadSignature, ValueError, binascii.Error) as error:
        raise TokenRefused("not genuine") from error
    if not isinstance(payload, dict):
        raise TokenRefused("not genuine")
    return payload


def key_list(keys: Keys) -> list[bytes]:
    """The keys, the signing one first; ValueError for none."""
    listed = [keys] if isinstance(keys, bytes) else list(keys)
    if not listed:
        raise ValueError("at least one signing key is needed")
    return listed


def _signer(keys: Keys, salt: str) -> Signer:
    # itsdangerous signs with the last key of its list and accepts any: ours signs with the first.
    return Signer(
        list(reversed(key_list(keys))),
        salt=salt,
        key_derivation="hmac",
        digest_method=hashlib.sha256,
    )


def _unsalted(keys: Keys) -> Signer:
    """The tokens of the notifier before 2026-11-28: HMAC-SHA256 under the key itself, no salt.
    Accepted so the links in pages sent before an upgrade, and the sessions open, keep working
    until they expire (a link lives notifier_link_valid_hours); purposes were kept apart then by
    their keys, which the notifier still requires to differ. Remove a release later."""
    return Signer(
        list(reversed(key_list(keys))), key_derivation="none", digest_method=hashlib.sha256
    )
