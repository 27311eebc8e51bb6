"""Merchant administration (admin token): merchants and their pairs, API keys."""

from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..merchants import accounts, keys
from .merchant_schemas import (
    Binding,
    KeyCreated,
    KeyOut,
    MerchantIn,
    MerchantOut,
    MerchantPage,
    MerchantPageQuery,
)
from .routing import Route, path_param


def _merchant_out(merchant: accounts.Merchant) -> MerchantOut:
    return MerchantOut(
        merchant_id=merchant.merchant_id,
        name=merchant.name,
        bindings=[Binding(source=s, channel=c) for s, c in merchant.bindings],
        create_time=merchant.create_time,
        update_time=merchant.update_time,
    )


class _MerchantNotFound(errors.NotFound):
    info = "merchant not found"


class _KeyNotFound(errors.NotFound):
    info = "API key not found"


async def put_merchant(request: web.Request, body: MerchantIn) -> MerchantOut:
    merchant = await accounts.put_merchant(
        request.app[SERVICES].pool,
        path_param(request, "merchantId"),
        body.name,
        [(b.source, b.channel) for b in body.bindings],
    )
    return _merchant_out(merchant)


async def get_merchant(request: web.Request, _: None) -> MerchantOut:
    found = await accounts.get_merchant(
        request.app[SERVICES].pool, path_param(request, "merchantId")
    )
    if found is None:
        raise _MerchantNotFound()
    return _merchant_out(found)


async def list_merchants(request: web.Request, query: MerchantPageQuery) -> MerchantPage:
    page = await accounts.list_merchants(request.app[SERVICES].pool, query.limit, query.after)
    return MerchantPage(items=[_merchant_out(m) for m in page.items], next_cursor=page.next_cursor)


async def create_key(request: web.Request, _: None) -> KeyCreated:
    created = await keys.create_key(request.app[SERVICES].pool, path_param(request, "merchantId"))
    if created is None:
        raise _MerchantNotFound()
    return KeyCreated(
        key_id=created.key_id, key=created.key, prefix=created.prefix,
        create_time=created.create_time,
    )  # fmt: skip


def _key_out(info: keys.KeyInfo) -> KeyOut:
    return KeyOut(
        key_id=info.key_id, prefix=info.prefix, create_time=info.create_time,
        last_used_time=info.last_used_time, revoked=info.revoked,
    )  # fmt: skip


async def list_keys(request: web.Request, _: None) -> list[KeyOut]:
    pool = request.app[SERVICES].pool
    merchant_id = path_param(request, "merchantId")
    if await accounts.get_merchant(pool, merchant_id) is None:
        raise _MerchantNotFound()
    return [_key_out(k) for k in await keys.list_keys(pool, merchant_id)]


async def revoke_key(request: web.Request, _: None) -> KeyOut:
    revoked = await keys.revoke_key(
        request.app[SERVICES].pool, path_param(request, "merchantId"), path_param(request, "keyId")
    )
    if revoked is None:
        raise _KeyNotFound()
    return _key_out(revoked)


_MERCHANT = "/api/v1/admin/merchants/{merchantId}"

MERCHANT_ROUTES: list[Route] = [
    Route(
        "PUT", _MERCHANT, put_merchant, "Create or replace a merchant and its source+channel pairs",
        "merchants", MerchantIn, MerchantOut, admin=True,
        raises=(errors.UniqueConflict, errors.ActivitySpansMerchants),
    ),
    Route(
        "GET", _MERCHANT, get_merchant, "A merchant", "merchants", None, MerchantOut,
        admin=True, raises=(_MerchantNotFound,),
    ),
    Route(
        "GET", "/api/v1/admin/merchants", list_merchants,
        "Merchants in merchantId order, one keyset page", "merchants", None, MerchantPage,
        admin=True, query=MerchantPageQuery,
    ),
    Route(
        "POST", f"{_MERCHANT}/keys", create_key,
        "A new API key for the merchant (the key is shown only in this answer)", "merchants",
        None, KeyCreated, admin=True, raises=(_MerchantNotFound,),
    ),
    Route(
        "GET", f"{_MERCHANT}/keys", list_keys, "The merchant's API keys (never the keys)",
        "merchants", None, list[KeyOut], admin=True, raises=(_MerchantNotFound,),
    ),
    Route(
        "DELETE", f"{_MERCHANT}/keys/{{keyId}}", revoke_key,
        "Revoke an API key: every API process refuses it within seconds", "merchants", None,
        KeyOut, admin=True, raises=(_KeyNotFound,),
    ),
]  # fmt: skip
