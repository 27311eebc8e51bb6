"""Endpoint signing secrets: made, parsed, and sealed at rest with Fernet (the `cryptography`
package: AES-128-CBC with HMAC-SHA256, authenticated) under GROUPBUY_SECRETS_KEY. A dump of the
database holds only sealed secrets; the key lives in the environment, never in the database."""

import base64
import binascii
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken

SECRET_PREFIX = "whsec_"
_NEW_SECRET_BYTES = 32


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_NEW_SECRET_BYTES)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for: base64 of 24 to 64 bytes; ValueError else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("must be whsec_ followed by base64")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("must encode 24 to 64 bytes (whsec_ + base64)")
    return key


def new_sealing_key() -> str:
    """A new GROUPBUY_SECRETS_KEY (URL-safe base64 of 32 bytes)."""
    return Fernet.generate_key().decode()


class SecretBox:
    """Seals and opens secrets with the process's key. Opened secrets are remembered per
    sealed value (sends to one endpoint repeat them: a claim of 500 opens each once)."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())
        self.open_key = lru_cache(maxsize=4096)(self._open_key)

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes) -> str:
        """The secret; ValueError when it was sealed under another key or altered."""
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise ValueError("a sealed secret does not open with GROUPBUY_SECRETS_KEY") from None

    def _open_key(self, sealed: bytes) -> bytes:
        """The signing key inside a sealed secret."""
        return signing_key(self.open(sealed))
