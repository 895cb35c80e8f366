"""RFC 8291 Appendix A: our encryption path (pywebpush + http_ece) reproduces the RFC's message."""

from __future__ import annotations

import base64
import types

import http_ece
import pytest
import pywebpush
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# RFC 8291 Appendix A, base64url without padding, line breaks removed
PLAINTEXT = b"When I grow up, I want to be a watermelon"
AS_PUBLIC = (
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
)
AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
UA_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
SALT = "DGv6ra1nlYgDCS1FRnbzlw"
AUTH_SECRET = "BTBZMqHH6r4Tts7J_aSIgg"
HEADER = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS"
    "6TlzAC8wEqKK6PBru3jl7A8"
)
CIPHERTEXT = "8pfeW0KbunFT06SuDKoJH9Ql87S1QUrdirN6GcG7sFz1y1sqLgVi1VhjVkHsUoEsbI_0LpXMuGvnzQ"
BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS"
    "6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qu"
    "lcy4a-fN"
)
RECORD_SIZE = 4096  # the RFC's rs, which is also http_ece's default


def b64d(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def private_key(raw: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64d(raw), "big"), ec.SECP256R1())


def point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def test_the_vectors_are_consistent() -> None:
    assert point(private_key(AS_PRIVATE)) == b64d(AS_PUBLIC)
    assert point(private_key(UA_PRIVATE)) == b64d(UA_PUBLIC)
    assert b64d(BODY) == b64d(HEADER) + b64d(CIPHERTEXT)


def test_our_encryption_path_produces_the_rfc_body(monkeypatch: pytest.MonkeyPatch) -> None:
    as_key = private_key(AS_PRIVATE)
    curves: list[ec.EllipticCurve] = []

    def ephemeral_key(curve: ec.EllipticCurve, *_: object) -> ec.EllipticCurvePrivateKey:
        curves.append(curve)
        return as_key

    def salt(n: int) -> bytes:
        assert n == 16
        return b64d(SALT)

    # pywebpush draws the application server's ephemeral key with ec.generate_private_key,
    # http_ece the salt with os.urandom(16): pin both to the RFC's values
    monkeypatch.setattr(pywebpush.ec, "generate_private_key", ephemeral_key)
    monkeypatch.setattr(http_ece, "os", types.SimpleNamespace(urandom=salt))
    subscription = {
        "endpoint": "https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV",
        "keys": {"p256dh": UA_PUBLIC, "auth": AUTH_SECRET},
    }
    body = pywebpush.WebPusher(subscription).encode(PLAINTEXT, "aes128gcm")["body"]

    assert len(curves) == 1 and isinstance(curves[0], ec.SECP256R1)
    assert body[:16] == b64d(SALT)
    assert int.from_bytes(body[16:20], "big") == RECORD_SIZE
    assert body[20] == 65 and body[21:86] == b64d(AS_PUBLIC)  # keyid: the sender's point
    assert body == b64d(BODY)


def test_the_rfc_body_decrypts_to_the_rfc_plaintext() -> None:
    plaintext = http_ece.decrypt(
        b64d(BODY),
        private_key=private_key(UA_PRIVATE),
        auth_secret=b64d(AUTH_SECRET),
        version="aes128gcm",
        rs=RECORD_SIZE,
    )
    assert plaintext == PLAINTEXT
