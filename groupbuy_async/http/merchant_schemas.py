"""Bodies of merchant administration: merchants, their source+channel pairs, their API keys."""

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from .callback_schemas import EventTypeName, Outcome
from .catalog_schemas import PageLimit
from .schemas import CHANNEL, CREATED, SOURCE, UPDATED, Body, Code, Name, Text
from .wire import TIME_RULE, URL_RULE, ApiTime, HttpUrlText, WholeNumber

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
    revoked: bool = Field(description="Revoked keys are refused (401) by every API process")
    create_time: datetime = Field(description=CREATED)
    last_used_time: datetime | None = Field(
        description="When a request last used it (kept to the minute); null if never"
    )


class KeyCreated(Body):
    key_id: str = Field(description=KEY_ID)
    key: str = Field(
        description="The API key (gbk_ + 43 URL-safe characters): send it as Authorization:"
        " Bearer <key> on /api/v1/gbm/*. Shown only in this answer; only its hash is stored"
    )
    prefix: str = Field(description="The key's first 12 characters, as key lists show them")
    create_time: datetime = Field(description=CREATED)


EndpointId = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]{1,32}$")
]
ENDPOINT_ID = "Endpoint id, chosen by the operator: 1-32 of A-Z a-z 0-9 _ -"
# whsec_ + base64 (padded) of 24 to 64 bytes: 8-20 whole groups with an optional padded
# tail, or 21 groups with at most one byte more.
_B64 = "[A-Za-z0-9+/]"
WebhookSecret = Annotated[
    str,
    StringConstraints(
        pattern=rf"^whsec_(?:(?:{_B64}{{4}}){{8,20}}(?:{_B64}{{2}}==|{_B64}{{3}}=)?"
        rf"|(?:{_B64}{{4}}){{21}}(?:{_B64}{{2}}==)?)$"
    ),
]
_SECRET = (
    "The endpoint's signing secret (whsec_ + base64 of 24-64 bytes): every callback carries"
    " `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>` under it"
)


EndpointKind = Literal["http", "amqp"]
ExchangeName = Annotated[
    str, StringConstraints(max_length=255, pattern=r"^[A-Za-z0-9_.:-]{0,255}$")
]
RoutingKey = Annotated[str, StringConstraints(max_length=255, pattern=r"^[\x20-\x7e]{0,255}$")]
_KIND = (
    "http: events are POSTed to `url`; amqp: published to `exchange` with `routingKey` on the"
    " operator's RabbitMQ (GROUPBUY_AMQP_URL), with the same body and Standard Webhooks"
    " headers, message id = the event id"
)
_EXCHANGE = (
    "kind amqp: the exchange events are published to, 0-255 of A-Z a-z 0-9 _ . : -"
    " ('' = the broker's default exchange, which routes by queue name)"
)
_ROUTING_KEY = "kind amqp: the routing key they are published with, 0-255 printable ASCII"


def _one_destination(schema: dict[str, Any]) -> None:
    """Kind http takes url and neither exchange nor routingKey; kind amqp both of those and
    no url (as the server checks it). Those three have no default: absent, not null."""
    for name in ("url", "exchange", "routingKey"):
        schema["properties"][name].pop("default", None)
    schema["oneOf"] = [
        {
            "properties": {"kind": {"const": "http", "description": "An HTTP endpoint"}},
            "required": ["url"],
            "not": {"anyOf": [{"required": ["exchange"]}, {"required": ["routingKey"]}]},
        },
        {
            "properties": {"kind": {"const": "amqp", "description": "A broker endpoint"}},
            "required": ["kind", "exchange", "routingKey"],
            "not": {"required": ["url"]},
        },
    ]


def _listed_once(items: list[Any], what: str) -> list[Any]:
    if len(set(items)) != len(items):
        raise ValueError(f"{what} listed twice")
    return items


class EndpointIn(Body):
    """An HTTP endpoint (`url`), or a broker one (`kind: amqp`, `exchange`, `routingKey`)."""

    model_config = ConfigDict(json_schema_extra=_one_destination)

    kind: EndpointKind = Field("http", description=_KIND)
    # Not nullable: absent, not null, when the kind takes none.
    url: HttpUrlText | SkipJsonSchema[None] = Field(
        None, description=f"kind http (required): where events are POSTed: {URL_RULE}"
    )
    exchange: ExchangeName | SkipJsonSchema[None] = Field(None, description=_EXCHANGE)
    routing_key: RoutingKey | SkipJsonSchema[None] = Field(None, description=_ROUTING_KEY)
    event_types: list[EventTypeName] = Field(
        [],
        max_length=4,
        json_schema_extra={"uniqueItems": True},
        description="The event types delivered here, each listed once; empty = every type",
    )
    channels: list[Binding] = Field(
        [],
        max_length=100,
        json_schema_extra={"uniqueItems": True},
        description="The merchant's source+channel pairs whose events are delivered here, each"
        " listed once and held by the merchant (400 otherwise); empty = all its pairs",
    )
    disabled: bool = Field(
        False,
        description="A disabled endpoint gets no new deliveries; its open ones are held (not"
        " sent, not counted as attempts) and due again once it is enabled",
    )
    description: Text = Field("", description="Free text for the operator")
    secret: WebhookSecret | None = Field(
        None,
        description=f"{_SECRET}. Only when creating the endpoint (400 on an existing one:"
        " rotate instead): given, to move an existing receiver; omitted, one is generated",
    )

    @model_validator(mode="after")
    def _one_destination(self) -> Self:
        given = self.model_fields_set
        for name, wire in (("url", "url"), ("exchange", "exchange"), ("routing_key", "routingKey")):
            if name in given and getattr(self, name) is None:
                raise ValueError(f"{wire}: must not be null (leave it out)")
        if self.kind == "http":
            if self.url is None:
                raise ValueError("url: required for kind http")
            if self.exchange is not None or self.routing_key is not None:
                wire = "exchange" if self.exchange is not None else "routingKey"
                raise ValueError(f"{wire}: only for kind amqp")
            return self
        if self.url is not None:
            raise ValueError("url: not for kind amqp (it publishes to exchange/routingKey)")
        if self.exchange is None:
            raise ValueError("exchange: required for kind amqp")
        if self.routing_key is None:
            raise ValueError("routingKey: required for kind amqp")
        return self

    @field_validator("event_types")
    @classmethod
    def _types_once(cls, types: list[str]) -> list[str]:
        return _listed_once(types, "an event type is")

    @field_validator("channels")
    @classmethod
    def _pairs_once(cls, channels: list[Binding]) -> list[Binding]:
        _listed_once([(b.source, b.channel) for b in channels], "a pair is")
        return channels


class EndpointOut(Body):
    merchant_id: MerchantId = Field(description=MERCHANT_ID)
    endpoint_id: EndpointId = Field(description=ENDPOINT_ID)
    kind: EndpointKind = Field(description=_KIND)
    url: str | None = Field(description="kind http: where events are POSTed; null for amqp")
    exchange: str | None = Field(description="kind amqp: the exchange; null for http")
    routing_key: str | None = Field(description="kind amqp: the routing key; null for http")
    event_types: list[EventTypeName] = Field(description="Types delivered here; empty = all")
    channels: list[Binding] = Field(description="Pairs delivered here; empty = all of its pairs")
    disabled: bool = Field(description="Disabled: no new deliveries, open ones held")
    description: str = Field(description="Free text for the operator")
    create_time: datetime = Field(description=CREATED)
    update_time: datetime = Field(description=UPDATED)
    previous_secret_until: datetime | None = Field(
        description="After a rotation: until when the secret before it still signs (beside the"
        " new one); null when only one secret signs"
    )
    disabled_time: datetime | None = Field(description="When it was disabled; null while enabled")
    disabled_reason: str | None = Field(
        description="Why the service disabled it (every attempt failed for"
        " GROUPBUY_ENDPOINT_DISABLE_AFTER_SECONDS, at least GROUPBUY_ENDPOINT_DISABLE_MIN_ATTEMPTS"
        " of them); null when enabled, or disabled by the operator or merchant"
    )
    secret: str | None = Field(
        None,
        description=f"{_SECRET}. Only in the answer that creates the endpoint; stored sealed",
    )


class RotateIn(Body):
    grace_seconds: Annotated[int, Field(ge=0, le=30 * 86400), WholeNumber] = Field(
        86400,
        description="How long the secret being replaced keeps signing beside the new one"
        " (0-2592000 seconds; default one day): receivers switch within it",
    )


class RotateOut(Body):
    secret: str = Field(description=f"The new secret. {_SECRET}. Shown only in this answer")
    previous_secret_until: datetime | None = Field(
        description="Until when the replaced secret still signs too (null: grace 0)"
    )


class PingOut(Outcome):
    event_id: str = Field(description="The ping's webhook-id (a ping is not stored)")
    success: bool = Field(
        description="Answered 2xx with the body `success` (a broker endpoint: confirmed by"
        " the broker, routed to a queue)"
    )


class RecoverIn(Body):
    since: ApiTime = Field(
        description=f"Deliveries that ended in error, or were held, since this time. {TIME_RULE}"
    )


class RecoverOut(Body):
    recovered: int = Field(description="How many deliveries are due again now")
