"""Endpoint secrets: made, parsed, sealed; the schema's pattern says exactly what is taken."""

import base64
import os
import re

import pytest
from pydantic import TypeAdapter

from groupbuy_async.http.merchant_schemas import WebhookSecret
from groupbuy_async.merchants.secret_box import (
    SecretBox,
    new_sealing_key,
    new_secret,
    signing_key,
)


def test_a_new_secret_is_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first != second and len(signing_key(first)) == 32


def test_the_schema_pattern_takes_exactly_the_secrets_that_parse() -> None:
    pattern = TypeAdapter(WebhookSecret).json_schema()["pattern"]
    for size in range(70):
        secret = "whsec_" + base64.b64encode(os.urandom(size)).decode()
        try:
            signing_key(secret)
            parses = True
        except ValueError:
            parses = False
        assert bool(re.fullmatch(pattern, secret)) == parses == (24 <= size <= 64), size
    for bad in ("whsec_" + "A" * 33, "whsec_" + "A" * 31 + "=", "wh_" + "A" * 32):
        assert not re.fullmatch(pattern, bad)
        with pytest.raises(ValueError):
            signing_key(bad)


def test_sealed_secrets_open_only_with_their_key() -> None:
    box, other = SecretBox(new_sealing_key()), SecretBox(new_sealing_key())
    secret = new_secret()
    sealed = box.seal(secret)
    assert secret.encode() not in sealed and secret.removeprefix("whsec_").encode() not in sealed
    assert box.open(sealed) == secret and box.open_key(sealed) == signing_key(secret)
    with pytest.raises(ValueError, match="GROUPBUY_SECRETS_KEY"):
        other.open(sealed)
    with pytest.raises(ValueError):
        box.open(sealed[:-1] + bytes([sealed[-1] ^ 1]))  # altered
