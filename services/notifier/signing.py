"""HMAC-signed tokens under the notifier's secret: action links and console sessions. Pure.

A token is a URL-safe JSON payload and its HMAC-SHA256; anything altered fails the signature.
"""

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any


class BadSignature(ValueError):
    """The token was not signed under this secret, or was altered since."""


def sign(secret: bytes, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(digest(secret, body))}"


def unsign(secret: bytes, token: str) -> dict[str, Any]:
    """The payload of a genuine token; BadSignature otherwise."""
    body, _, signature = token.partition(".")
    try:
        genuine = hmac.compare_digest(_unb64(signature), digest(secret, body))
        payload = json.loads(_unb64(body)) if genuine else None
    except (ValueError, binascii.Error):
        payload = None
    if not isinstance(payload, dict):
        raise BadSignature("not genuine")
    return payload


def digest(secret: bytes, text: str) -> bytes:
    return hmac.new(secret, text.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
