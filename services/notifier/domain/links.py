"""Signed, expiring, single-use action links for pages. Pure.

A page carries a link per action (acknowledge, not my patient, resolve). The link holds the alert
id (opaque, no PHI), the action, an expiry, the role it was sent to and a nonce, signed with
HMAC-SHA256 under the notifier's secret. A forged or altered link fails the signature, an old one
its expiry; the store refuses a nonce used before, so a link works once.
"""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas import AckAction
from services.notifier.signing import BadSignature, sign, unsign


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
    return sign(secret, payload)


def verify_link(secret: bytes, token: str, now: datetime) -> LinkClaim:
    """The claim a genuine, unexpired token makes; LinkRefused otherwise."""
    try:
        payload = unsign(secret, token)
    except BadSignature as error:
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
