"""Bodies of merchant administration: merchants, their source+channel pairs, their API keys."""

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, field_validator

from .catalog_schemas import PageLimit
from .schemas import CHANNEL, CREATED, SOURCE, UPDATED, Body, Code, Name

MerchantId = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]{1,32}$")
]
KeyId = Annotated[str, StringConstraints(pattern=r"^key_[0-9a-f]{16}$")]
MERCHANT_ID = "Merchant id, chosen by the operator: 1-32 of A-Z a-z 0-9 _ -"
KEY_ID = "API key id (key_ + 16 hex digits): names a key without revealing it"


class Binding(Body):
    model_config = ConfigDict(extra="forbid")  # a pair is its two fields, nothing else

    source: Code = Field(description=SOURCE)
    channel: Code = Field(description=CHANNEL)


class MerchantIn(Body):
    name: Name = Field(description="Display name")
    bindings: list[Binding] = Field(
        [],
        max_length=100,
        json_schema_extra={"uniqueItems": True},
        description="The source+channel pairs (shops) this merchant trades under (at most"
        " 100), each listed once (400 otherwise); a pair belongs to at most one merchant."
        " Teams, orders and events under a pair are its merchant's; goods under a pair no"
        " merchant holds cannot be traded",
    )

    @field_validator("bindings")
    @classmethod
    def _distinct(cls, bindings: list[Binding]) -> list[Binding]:
        if len({(b.source, b.channel) for b in bindings}) != len(bindings):
            raise ValueError("a source+channel pair is listed twice")
        return bindings


class MerchantOut(MerchantIn):
    merchant_id: MerchantId = Field(description=MERCHANT_ID)
    create_time: datetime = Field(description=CREATED)
    update_time: datetime = Field(description=UPDATED)


class MerchantPageQuery(Body):
    limit: PageLimit = Field(100, description="Most merchants on the page (1-500)")
    after: MerchantId | None = Field(None, description="nextCursor of the previous page")


class MerchantPage(Body):
    items: list[MerchantOut] = Field(description="Merchants in merchantId order")
    next_cursor: str | None = Field(description="after= for the next page; null on the last")


class KeyOut(Body):
    key_id: str = Field(description=KEY_ID)
    prefix: str = Field(description="The key's first 12 characters, to recognise it")
    create_time: datetime = Field(description=CREATED)
    last_used_time: datetime | None = Field(
        description="When a request last used it (kept to the minute); null if never"
    )
    revoked: bool = Field(description="Revoked keys are refused (401) by every API process")


class KeyCreated(Body):
    key_id: str = Field(description=KEY_ID)
    key: str = Field(
        description="The API key (gbk_ + 43 URL-safe characters): send it as Authorization:"
        " Bearer <key> on /api/v1/gbm/*. Shown only in this answer; only its hash is stored"
    )
    prefix: str = Field(description="The key's first 12 characters, as key lists show them")
    create_time: datetime = Field(description=CREATED)
