"""VAPID key pairs (RFC 8292) in the forms browsers and pywebpush take."""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, Vapid02


class VapidKeyError(ValueError):
    """A VAPID key that is not usable; the message names the setting."""


def b64url_decode(value: str) -> bytes:
    """base64url or base64, padded or not."""
    value = value.strip().replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def check_vapid_keys(public: str, private: str) -> None:
    """The public key is a P-256 point and the private key (raw or PEM) derives it."""
    try:
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(public))
    except (ValueError, binascii.Error):
        raise VapidKeyError("VAPID_PUBLIC_KEY: not a base64url P-256 public key") from None
    try:
        if private.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(private.encode(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
        else:
            raw = b64url_decode(private)
            if len(raw) != 32:
                raise ValueError("not 32 bytes")
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (ValueError, TypeError, AssertionError, binascii.Error):
        raise VapidKeyError("VAPID_PRIVATE_KEY: not a base64url P-256 private key") from None
    if key.public_key().public_numbers() != point.public_numbers():
        raise VapidKeyError("VAPID_PRIVATE_KEY: does not match VAPID_PUBLIC_KEY")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def generate_vapid_keys() -> tuple[str, str]:
    """(public key: base64url of the 65-byte point, private key: base64url of the raw scalar)."""
    vapid = Vapid()
    vapid.generate_keys()
    public = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    private = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    return _b64url(public), _b64url(private)


def load_vapid(private: str) -> Vapid02:
    """The signer for RFC 8292 headers (`vapid t=…, k=…`) from a raw or PEM private key."""
    if private.lstrip().startswith("-----BEGIN"):
        return Vapid02.from_pem(private.encode())
    raw = private.strip().replace("+", "-").replace("/", "_").rstrip("=")
    return Vapid02.from_raw(raw.encode())
