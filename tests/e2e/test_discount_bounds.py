"""A discount whose numbers cannot be priced is refused when saved, never at lock time."""

import asyncpg
import pytest

from ..conftest import Api, new_id


@pytest.mark.parametrize("expr", ["1e999999999", "99999999999", "0.001"])
async def test_unpriceable_discount_is_refused_and_not_stored(
    api: Api, pool: asyncpg.Pool, expr: str
) -> None:
    discount_id = new_id("d")
    body = {"discountName": "huge", "marketPlan": "ZJ", "marketExpr": expr}
    status, env = await api.call("PUT", f"/api/v1/admin/discounts/{discount_id}", body, admin=True)
    assert (status, env["code"]) == (400, "0002"), env
    assert "marketExpr" in env["info"] or "decimal" in env["info"] or "number" in env["info"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM group_buy_discount WHERE discount_id = $1", discount_id
        )
        == 0
    )


async def test_largest_discount_still_prices(api: Api) -> None:
    act = await api.new_activity(market_plan="ZJ", market_expr="9999999999.99")
    status, env = await api.lock(**act, userId="u1", outTradeNo=new_id())
    assert status == 200 and env["data"]["payPrice"] == 0.01, env
