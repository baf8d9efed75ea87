"""Encryption at rest for tenants' provider API keys.

MultiFernet over the keys in ``SYSTIMZ_ENCRYPTION_KEYS``: the first key encrypts, every key
decrypts, so a new key is put first and the old ones stay until ``rotate_encryption_keys`` has
re-encrypted every row. Fernet is authenticated (AES-128-CBC + HMAC-SHA256) but carries no
associated data, so the plaintext is an envelope holding a *context* string (the row's
identity); a ciphertext copied into another row, or another organisation's row, fails to
decrypt instead of handing over someone else's key. These keys are separate from
``SECRET_KEY``: rotating one never forces work on the other.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionError(Exception):
    """The ciphertext is damaged, under a key no longer configured, or belongs elsewhere."""


def key_id(key: str) -> str:
    """A short, non-secret fingerprint of a key, stored beside each ciphertext."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@lru_cache(maxsize=8)
def _multi(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in keys])


def _keys() -> tuple[str, ...]:
    keys = tuple(settings.ENCRYPTION_KEYS)
    if not keys:
        raise ImproperlyConfigured(
            "SYSTIMZ_ENCRYPTION_KEYS: must be set to store provider credentials "
            "(generate one with `make .env` or cryptography's Fernet.generate_key())"
        )
    return keys


def current_key_id() -> str:
    """The fingerprint of the key that encrypts now (the first one)."""
    return key_id(_keys()[0])


def encrypt(plaintext: str, *, context: str) -> tuple[str, str]:
    """Encrypt ``plaintext`` bound to ``context``; returns ``(token, key_id)``."""
    keys = _keys()
    envelope = json.dumps({"c": context, "v": plaintext}, separators=(",", ":"))
    token = _multi(keys).encrypt(envelope.encode()).decode()
    return token, key_id(keys[0])


def decrypt(token: str, *, context: str) -> str:
    """Decrypt a token made by :func:`encrypt` for the same ``context``."""
    try:
        envelope = json.loads(_multi(_keys()).decrypt(token.encode()))
    except (InvalidToken, ValueError) as exc:
        raise DecryptionError("cannot decrypt: damaged, or under an unknown key") from exc
    if not isinstance(envelope, dict) or envelope.get("c") != context:
        raise DecryptionError("the ciphertext belongs to another record")
    return str(envelope["v"])


def reencrypt(token: str, *, context: str) -> tuple[str, str]:
    """Re-encrypt under the first key after checking the context; returns ``(token, key_id)``."""
    return encrypt(decrypt(token, context=context), context=context)
