"""Merchants, their source+channel pairs and API keys (admin), over HTTP."""

import asyncio
import hashlib
import time
import uuid
from typing import Any

import asyncpg
import pytest

from groupbuy_async.merchants.keys import KeyCheck
from groupbuy_async.settings import Settings

from ..conftest import Api, start_client

MERCHANTS = "/api/v1/admin/merchants"


def _merchant_id() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


def _pair() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"source": f"s{tag}", "channel": f"c{tag}"}


async def _put(api: Api, merchant_id: str, **body: Any) -> tuple[int, dict[str, Any]]:
    return await api.call("PUT", f"{MERCHANTS}/{merchant_id}", {"name": "shop", **body}, admin=True)


async def test_a_merchant_is_created_replaced_read_and_paged(api: Api) -> None:
    mid, pairs = _merchant_id(), [_pair(), _pair()]
    status, env = await _put(api, mid, bindings=pairs)
    assert status == 200, env
    assert env["data"]["merchantId"] == mid
    assert sorted(map(tuple, (p.values() for p in env["data"]["bindings"]))) == sorted(
        tuple(p.values()) for p in pairs
    )
    status, env = await _put(api, mid, name="renamed", bindings=pairs[:1])
    assert (status, env["data"]["name"], env["data"]["bindings"]) == (200, "renamed", pairs[:1])
    status, got = await api.call("GET", f"{MERCHANTS}/{mid}", admin=True)
    assert (status, got["data"]) == (200, env["data"])
    seen: list[str] = []
    after = None
    while True:
        query = f"?limit=2&after={after}" if after else "?limit=2"
        status, page = await api.call("GET", f"{MERCHANTS}{query}", admin=True)
        assert status == 200, page
        seen += [m["merchantId"] for m in page["data"]["items"]]
        after = page["data"]["nextCursor"]
        if after is None:
            break
    assert mid in seen and seen == sorted(seen) and len(seen) == len(set(seen))


async def test_a_pair_belongs_to_one_merchant(api: Api) -> None:
    pair, first, second = _pair(), _merchant_id(), _merchant_id()
    assert (await _put(api, first, bindings=[pair]))[0] == 200
    status, env = await _put(api, second, bindings=[_pair(), pair])
    assert (status, env["code"]) == (409, "0003"), env
    assert f"{pair['source']}/{pair['channel']}" in env["info"] and first in env["info"]
    status, env = await api.call("GET", f"{MERCHANTS}/{second}", admin=True)
    assert status == 404, "a refused put writes nothing"


async def test_concurrent_claims_of_one_pair_give_it_to_one_merchant(api: Api) -> None:
    pair = _pair()
    answers = await asyncio.gather(*(_put(api, _merchant_id(), bindings=[pair]) for _ in range(8)))
    assert sorted(status for status, _ in answers) == [200] + [409] * 7, answers


@pytest.mark.parametrize(
    ("merchant_id", "body"),
    [
        ("has space", {"name": "x"}),
        ("x" * 33, {"name": "x"}),
        ("ok", {"name": ""}),
        ("ok", {"name": "x", "bindings": [{"source": "s", "channel": "c"}] * 2}),
        ("ok", {"name": "x", "bindings": [{"source": "s"}]}),
    ],
)
async def test_bad_merchant_input_is_400(api: Api, merchant_id: str, body: Any) -> None:
    status, env = await api.call("PUT", f"{MERCHANTS}/{merchant_id}", body, admin=True)
    assert (status, env["code"]) == (400, "0002"), env


async def test_an_activity_never_sells_for_two_merchants(api: Api) -> None:
    first, second = _pair(), _pair()
    a, b = _merchant_id(), _merchant_id()
    assert (await _put(api, a, bindings=[first]))[0] == 200
    assert (await _put(api, b, bindings=[second]))[0] == 200
    act = await api.new_activity(**first)
    # Goods of the other merchant added to the activity: refused, the activity unchanged.
    tag = uuid.uuid4().hex[:8]
    sku = {"goodsName": "g", "originalPrice": 10, **second}
    assert (await api.call("PUT", f"/api/v1/admin/skus/g{tag}", sku, admin=True))[0] == 200
    status, activity = await api.call(
        "GET", f"/api/v1/admin/activities/{act['activityId']}", admin=True
    )
    body = {
        k: v
        for k, v in activity["data"].items()
        if k not in ("activityId", "createTime", "updateTime")
    }
    body["goods"] = [*body["goods"], {**second, "goodsId": f"g{tag}"}]
    status, env = await api.call(
        "PUT", f"/api/v1/admin/activities/{act['activityId']}", body, admin=True
    )
    assert (status, env["code"]) == (409, "E0302"), env
    # From the other side: merchant b taking the activity's pair as well.
    status, env = await _put(api, b, bindings=[second, _pair()])
    assert status == 200, env
    status, env = await _put(api, b, bindings=[second, first])
    assert (status, env["code"]) == (409, "0003"), env  # a's pair
    c = _merchant_id()
    unheld = _pair()
    act2 = await api.new_activity(**unheld)
    assert act2
    status, env = await _put(api, c, bindings=[unheld])
    assert status == 200, env  # one merchant for act2: fine


async def test_keys_are_shown_once_and_stored_hashed(api: Api, pool: asyncpg.Pool) -> None:
    mid = _merchant_id()
    assert (await _put(api, mid, bindings=[_pair()]))[0] == 200
    status, env = await api.call("POST", f"{MERCHANTS}/{mid}/keys", admin=True)
    assert status == 200, env
    created = env["data"]
    key = created["key"]
    assert key.startswith("gbk_") and len(key) >= 4 + 43 and created["prefix"] == key[:12]
    row = await pool.fetchrow("SELECT * FROM merchant_key WHERE key_id = $1", created["keyId"])
    assert row is not None and row["key_hash"] == hashlib.sha256(key.encode()).digest()
    dump = " ".join(str(v) for v in row.values())
    assert key not in dump and key[12:] not in dump
    status, env = await api.call("GET", f"{MERCHANTS}/{mid}/keys", admin=True)
    assert status == 200 and [k["keyId"] for k in env["data"]] == [created["keyId"]]
    assert "key" not in env["data"][0] and env["data"][0]["revoked"] is False
    status, env = await api.call("POST", f"{MERCHANTS}/m-nobody/keys", admin=True)
    assert (status, env["code"]) == (404, "0404"), env


async def test_a_revoked_key_is_refused_by_every_process_within_seconds(
    api: Api, settings: Settings
) -> None:
    mid = _merchant_id()
    pair = _pair()
    assert (await _put(api, mid, bindings=[pair]))[0] == 200
    _, env = await api.call("POST", f"{MERCHANTS}/{mid}/keys", admin=True)
    key, key_id = env["data"]["key"], env["data"]["keyId"]
    others = [await start_client(settings) for _ in range(2)]  # other API processes
    try:
        path = "/api/v1/gbm/teams/12345678"

        async def status_on(client: Any) -> int:
            async with client.get(path, headers={"Authorization": f"Bearer {key}"}) as resp:
                return int(resp.status)

        assert [await status_on(c) for c in others] == [404, 404]  # known: not 401
        status, env = await api.call("DELETE", f"{MERCHANTS}/{mid}/keys/{key_id}", admin=True)
        assert (status, env["data"]["revoked"]) == (200, True), env
        start = time.monotonic()
        while [await status_on(c) for c in others] != [401, 401]:
            assert time.monotonic() - start < 5, "a revoked key still accepted after 5 s"
            await asyncio.sleep(0.1)
    finally:
        for c in others:
            await c.close()


async def test_key_check_compares_and_caches(pool: asyncpg.Pool, api: Api) -> None:
    mid = _merchant_id()
    pair = _pair()
    assert (await _put(api, mid, bindings=[pair]))[0] == 200
    _, env = await api.call("POST", f"{MERCHANTS}/{mid}/keys", admin=True)
    key = env["data"]["key"]
    check = KeyCheck(pool, ttl=60)
    who = await check.principal(f"Bearer {key}")
    assert (who.merchant_id, who.pairs) == (mid, frozenset({(pair["source"], pair["channel"])}))
    for bad in (None, "", "Bearer", f"Basic {key}", "Bearer gbk_" + "A" * 43, f"Bearer {key}x"):
        with pytest.raises(Exception, match="API key"):
            await check.principal(bad)
