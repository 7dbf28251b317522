"""Signed, expiring, single-use action links for pages. Pure.

A page carries a link per action (acknowledge, not my patient, resolve). The link holds the alert
id (opaque, no PHI), the action, an expiry, the role it was sent to and a nonce, signed with
HMAC-SHA256 under the notifier's secret. A forged or altered link fails the signature, an old one
its expiry; the store refuses a nonce used before, so a link works once.
"""

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas import AckAction


@dataclass(frozen=True)
class LinkClaim:
    alert_id: str
    action: AckAction
    recipient: str  # the roster role the page went to, recorded as who acted
    expires_at: datetime
    nonce: str


class LinkRefused(Exception):
    """Why a link is not honoured, in words safe to log and to show (no PHI)."""


def sign_link(
    secret: bytes,
    alert_id: str,
    action: AckAction,
    recipient: str,
    now: datetime,
    valid_for: timedelta,
) -> str:
    """A URL-safe token for one action on one alert."""
    payload = {
        "a": alert_id,
        "x": action.value,
        "r": recipient,
        "e": int((now + valid_for).timestamp()),
        "n": secrets.token_urlsafe(12),
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(_mac(secret, body))}"


def verify_link(secret: bytes, token: str, now: datetime) -> LinkClaim:
    """The claim a genuine, unexpired token makes; LinkRefused otherwise."""
    body, _, signature = token.partition(".")
    try:
        genuine = hmac.compare_digest(_unb64(signature), _mac(secret, body))
    except (ValueError, binascii.Error):
        genuine = False
    if not genuine:
        raise LinkRefused("the link is not genuine")
    try:
        payload = json.loads(_unb64(body))
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


def _mac(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
