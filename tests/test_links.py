"""Signed action links: genuine ones are honoured until they expire; anything else is refused."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas import AckAction
from services.notifier.domain.links import LinkRefused, sign_link, verify_link

SECRET = b"a-secret-only-the-notifier-knows"
NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_a_genuine_link_says_what_it_was_made_for() -> None:
    token = sign_link(SECRET, "alert-1", AckAction.ACKNOWLEDGE, "adult/primary", NOW, HOUR)
    claim = verify_link(SECRET, token, NOW + HOUR - timedelta(seconds=1))
    assert (claim.alert_id, claim.action, claim.recipient) == (
        "alert-1",
        AckAction.ACKNOWLEDGE,
        "adult/primary",
    )
    assert claim.expires_at == NOW + HOUR
    other = sign_link(SECRET, "alert-1", AckAction.ACKNOWLEDGE, "adult/primary", NOW, HOUR)
    assert verify_link(SECRET, other, NOW).nonce != claim.nonce  # each link is its own


def test_an_expired_link_is_refused() -> None:
    token = sign_link(SECRET, "alert-1", AckAction.RESOLVE, "adult/primary", NOW, HOUR)
    with pytest.raises(LinkRefused, match="expired"):
        verify_link(SECRET, token, NOW + HOUR)


def test_a_link_altered_to_another_alert_or_action_is_refused() -> None:
    token = sign_link(SECRET, "alert-1", AckAction.NOT_MY_PATIENT, "adult/primary", NOW, HOUR)
    body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["x"] = "resolve"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(LinkRefused, match="not genuine"):
        verify_link(SECRET, f"{forged}.{signature}", NOW)


@pytest.mark.parametrize("token", ["", "no-dot", "abc.def", "ünïcode.sig", "a.b.c"])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(LinkRefused, match="not genuine"):
        verify_link(SECRET, token, NOW)


def test_a_link_signed_under_another_secret_is_refused() -> None:
    token = sign_link(b"another-deployment", "alert-1", AckAction.ACKNOWLEDGE, "r", NOW, HOUR)
    with pytest.raises(LinkRefused, match="not genuine"):
        verify_link(SECRET, token, NOW)
