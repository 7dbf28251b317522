"""Signed action links: genuine ones are honoured until they expire; anything else is refused."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas import AckAction
from services.notifier.domain.links import (
    LINK_SALT,
    SESSION_SALT,
    LinkRefused,
    TokenRefused,
    sign,
    sign_link,
    unsign,
    verify_link,
)

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


KEY = b"the-new-link-key"


def test_a_new_key_put_first_signs_and_links_under_the_old_one_still_open() -> None:
    old = sign_link(SECRET, "alert-1", AckAction.ACKNOWLEDGE, "adult/primary", NOW, HOUR)
    new = sign_link([KEY, SECRET], "alert-1", AckAction.ACKNOWLEDGE, "adult/primary", NOW, HOUR)
    assert verify_link([KEY, SECRET], old, NOW).alert_id == "alert-1"  # in flight: still opens
    assert verify_link([KEY], new, NOW).alert_id == "alert-1"  # signed with the first key
    with pytest.raises(LinkRefused, match="not genuine"):
        verify_link([SECRET], new, NOW)


def test_a_link_signed_with_a_key_no_longer_listed_is_refused() -> None:
    token = sign_link(SECRET, "alert-1", AckAction.RESOLVE, "adult/primary", NOW, HOUR)
    with pytest.raises(LinkRefused, match="not genuine"):
        verify_link([KEY], token, NOW)


def test_a_link_key_signs_no_session_and_a_session_token_opens_no_link() -> None:
    payload = {"a": "alert-1", "x": "acknowledge", "r": "r", "e": 2**40, "n": "n"}
    as_session = sign(SECRET, SESSION_SALT, payload)
    with pytest.raises(LinkRefused, match="not genuine"):
        verify_link(SECRET, as_session, NOW)  # the right key, the wrong purpose
    with pytest.raises(TokenRefused):
        unsign(SECRET, SESSION_SALT, sign(SECRET, LINK_SALT, {"u": "dr.ada"}))


def test_a_link_signed_before_purposes_had_salts_opens_until_it_expires() -> None:
    """Links in pages sent before the upgrade: HMAC-SHA256 of the payload under the key."""
    expires = int((NOW + HOUR).timestamp())
    body = json.dumps({"a": "alert-1", "x": "resolve", "r": "r", "e": expires, "n": "n"})
    encoded = base64.urlsafe_b64encode(body.encode()).rstrip(b"=")
    signature = hmac.new(SECRET, encoded, hashlib.sha256).digest()
    token = f"{encoded.decode()}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert verify_link(SECRET, token, NOW).action is AckAction.RESOLVE
    with pytest.raises(LinkRefused, match="expired"):
        verify_link(SECRET, token, NOW + HOUR)
    with pytest.raises(LinkRefused, match="not genuine"):
        verify_link(KEY, token, NOW)
