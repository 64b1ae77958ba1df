"""Webhook signatures as the Standard Webhooks specification defines them (www.standardwebhooks.com), so a
receiver can check them with any of its libraries: the secret is "whsec_" and base64 of its key; the
signature is HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<body>", sent as "v1,<base64>" in the
webhook-signature header (several, space-separated, may be sent; one that verifies is enough).

Used by the events service's dispatcher to sign and by the CLI's receiver (and the tests) to verify.
"""

import base64
import hashlib
import hmac
import secrets
import time

PREFIX = "whsec_"
TOLERANCE_SECONDS = 300  # a receiver refuses a timestamp further than this from its clock (replays)


class SignatureRefused(Exception):
    pass


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(PREFIX) :])


def sign(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def headers(secret: str, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, delivery_id, timestamp, body),
    }


def verify(secret: str, received: dict[str, str], body: bytes, now: float | None = None) -> str:
    """The delivery id of a request whose headers carry a valid, recent signature; else SignatureRefused."""
    lowered = {name.lower(): value for name, value in received.items()}
    delivery_id, stamp = lowered.get("webhook-id", ""), lowered.get("webhook-timestamp", "")
    if not delivery_id or not stamp.isdigit():
        raise SignatureRefused("webhook-id or webhook-timestamp missing")
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_SECONDS:
        raise SignatureRefused("timestamp outside the tolerance (a replay, or a clock far off)")
    expected = sign(secret, delivery_id, int(stamp), body)
    if not any(hmac.compare_digest(expected, given) for given in lowered.get("webhook-signature", "").split()):
        raise SignatureRefused("no signature verifies with this secret")
    return delivery_id
