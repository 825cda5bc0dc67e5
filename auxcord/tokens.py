"""Spotify tokens encrypted at rest.

The Fernet key is derived from ``AUXCORD_SECRET_KEY`` with HKDF, so any long random string works
as the secret and the raw secret is never used as a key directly. A token that no longer
decrypts (the secret changed) is reported as such, never returned half-read.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from auxcord.errors import AuxcordError


class TokenDecryptionError(AuxcordError):
    """A stored token cannot be decrypted: AUXCORD_SECRET_KEY changed since it was stored."""


class TokenCipher:
    """Encrypts and decrypts token strings with a key derived from the secret key."""

    def __init__(self, secret_key: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"auxcord-token-encryption", info=b"fernet"
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise TokenDecryptionError(
                "a stored Spotify token cannot be decrypted: AUXCORD_SECRET_KEY has changed "
                "since it was stored; the user must link their account again"
            ) from exc
