"""Merchant API keys: created (shown once), listed, revoked; and the check every shop-API
request passes. A key is `gbk_` + 43 URL-safe characters (32 random bytes); only its SHA-256
is stored, and the request's key is found by its hash and then compared in constant time.

Keys a process has checked are remembered for at most CACHE_SECONDS (a revoked key is refused
by every process within that, plus a request's duration), so a known key costs no round trip.
"""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .. import errors
from .accounts import Pair

KEY_PREFIX = "gbk_"
_KEY_BYTES = 32
_SHOWN = 12  # characters of a key kept to recognise it: "gbk_" + 8
CACHE_SECONDS = 2.0
_CACHE_MAX = 10_000
# lastUsedTime is written at most this often per key (a write per request would cost more
# than the request).
_TOUCH_SECONDS = 60


@dataclass(frozen=True)
class NewKey:
    key_id: str
    key: str
    prefix: str
    create_time: datetime


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    prefix: str
    create_time: datetime
    last_used_time: datetime | None
    revoked: bool


@dataclass(frozen=True)
class Principal:
    """Who a request is: the merchant of its key, and the pairs it may trade under."""

    merchant_id: str
    key_id: str
    pairs: frozenset[Pair]


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_key(pool: asyncpg.Pool, merchant_id: str) -> NewKey | None:
    """A new key for the merchant (None when there is no such merchant)."""
    key = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
    key_id = "key_" + secrets.token_hex(8)
    row = await pool.fetchrow(
        "INSERT INTO merchant_key (key_id, merchant_id, prefix, key_hash)"
        " SELECT $1, merchant_id, $3, $4 FROM merchant WHERE merchant_id = $2"
        " RETURNING create_time",
        key_id, merchant_id, key[:_SHOWN], digest(key),
    )  # fmt: skip
    return None if row is None else NewKey(key_id, key, key[:_SHOWN], row["create_time"])


_KEY_COLUMNS = """key_id, prefix, create_time, last_used_time,
    revoked_time IS NOT NULL AS revoked"""


async def list_keys(pool: asyncpg.Pool, merchant_id: str) -> list[KeyInfo]:
    rows = await pool.fetch(
        f"SELECT {_KEY_COLUMNS} FROM merchant_key WHERE merchant_id = $1 ORDER BY id",
        merchant_id,
    )
    return [KeyInfo(**dict(r)) for r in rows]


async def revoke_key(pool: asyncpg.Pool, merchant_id: str, key_id: str) -> KeyInfo | None:
    """Revoke a key (again: the same answer); None when the merchant has no such key."""
    row = await pool.fetchrow(
        "UPDATE merchant_key SET revoked_time = coalesce(revoked_time, now())"
        f" WHERE merchant_id = $1 AND key_id = $2 RETURNING {_KEY_COLUMNS}",
        merchant_id,
        key_id,
    )
    return None if row is None else KeyInfo(**dict(row))


# Found by its hash, live only; lastUsedTime touched in the same round trip when stale.
_AUTHENTICATE = f"""
WITH found AS (
    SELECT k.key_id, k.merchant_id, k.key_hash FROM merchant_key k
    WHERE k.key_hash = $1 AND k.revoked_time IS NULL
), touched AS (
    UPDATE merchant_key k SET last_used_time = now()
    FROM found WHERE k.key_id = found.key_id
      AND (k.last_used_time IS NULL OR k.last_used_time < now() - interval '{_TOUCH_SECONDS} s')
)
SELECT f.key_id, f.merchant_id, f.key_hash,
       ARRAY(SELECT b.source FROM merchant_binding b WHERE b.merchant_id = f.merchant_id
             ORDER BY b.source, b.channel) AS sources,
       ARRAY(SELECT b.channel FROM merchant_binding b WHERE b.merchant_id = f.merchant_id
             ORDER BY b.source, b.channel) AS channels
FROM found f
"""


class KeyCheck:
    """The shop API's authentication, one per process."""

    def __init__(self, pool: asyncpg.Pool, ttl: float = CACHE_SECONDS) -> None:
        self.pool = pool
        self.ttl = ttl
        self._known: dict[bytes, tuple[float, Principal | None]] = {}

    async def principal(self, authorization: str | None) -> Principal:
        """The merchant a `Bearer <key>` header names; Unauthorized (0401) otherwise."""
        key = _bearer(authorization)
        hashed = digest(key)
        now = time.monotonic()
        cached = self._known.get(hashed)
        if cached is not None and cached[0] > now:
            found = cached[1]
        else:
            found = await self._look_up(hashed)
            self._remember(hashed, now + self.ttl, found)
        if found is None:
            raise errors.Unauthorized("unknown or revoked API key")
        return found

    async def _look_up(self, hashed: bytes) -> Principal | None:
        row = await self.pool.fetchrow(_AUTHENTICATE, hashed)
        if row is None or not hmac.compare_digest(row["key_hash"], hashed):
            return None
        pairs = frozenset(zip(row["sources"], row["channels"], strict=True))
        return Principal(row["merchant_id"], row["key_id"], pairs)

    def _remember(self, hashed: bytes, until: float, found: Principal | None) -> None:
        if len(self._known) >= _CACHE_MAX:
            now = time.monotonic()
            self._known = {k: v for k, v in self._known.items() if v[0] > now}
            if len(self._known) >= _CACHE_MAX:
                self._known.clear()
        self._known[hashed] = (until, found)


def _bearer(authorization: str | None) -> str:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.startswith(KEY_PREFIX) or len(key) > 128:
        raise errors.Unauthorized("an API key is required: Authorization: Bearer gbk_…")
    return key
