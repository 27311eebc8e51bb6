"""Events over HTTP: per-type counts and metrics, the per-event views, the feed, order pull."""

import re
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from groupbuy_async.callbacks import outbox
from groupbuy_async.callbacks.events import Event, EventType
from groupbuy_async.settings import Settings

from ..conftest import Api, make_tasks
from ..merchant import Merchant

NO_COUNTS = {"waitCount": 0, "successCount": 0, "retryCount": 0, "errorCount": 0}
TYPES = [str(t) for t in EventType]


async def bare_team(pool: asyncpg.Pool) -> str:
    """A complete team with no event yet: each test writes the events it needs."""
    await make_tasks(pool, 0, "http://127.0.0.1:9/unused")  # the outbox tests' activity (1)
    team_id = str(uuid.uuid4().int)[:20]
    await pool.execute(
        "INSERT INTO group_buy_order (team_id, activity_id, source, channel, original_price,"
        " deduction_price, pay_price, target_count, complete_count, lock_count, status,"
        " valid_start_time, valid_end_time, notify_url) VALUES ($1, 1, 's01', 'c01', 100, 20,"
        " 80, 1, 1, 1, 1, now(), now() + interval '15 minutes', 'http://127.0.0.1:9/unused')",
        team_id,
    )
    return team_id


def event(kind: EventType, team_id: str, url: str, order_id: str | None = None) -> Event:
    data: dict[str, Any] = {"teamId": team_id, "activityId": 1}
    if order_id is not None:
        data |= {"orderId": order_id, "outTradeNo": f"out-{order_id}", "userId": "u1"}
    return Event(kind, team_id, 1, url, data, order_id)


async def enqueue(pool: asyncpg.Pool, *events: Event) -> list[str]:
    """Write events as the state changes that report them do: in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        return await outbox.enqueue(conn, list(events))


def by_type(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {t: counts.get(t, NO_COUNTS) for t in TYPES}


async def scrape(api: Api) -> str:
    async with api.client.get("/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# --- per-type counts and metrics -----------------------------------------------------------


async def test_run_counts_and_metrics_carry_the_event_type(
    api: Api, pool: asyncpg.Pool, merchant: Merchant
) -> None:
    success = 'groupbuy_notify_attempts_total{outcome="success",type="order.closed"}'
    before = sample(await scrape(api), success)
    team_id = await bare_team(pool)
    await enqueue(pool, event(EventType.ORDER_CLOSED, team_id, merchant.url, f"{team_id}1"))

    status, env = await api.call(
        "POST", "/api/v1/admin/notify/run", {"teamId": team_id}, admin=True
    )
    one = {"waitCount": 1, "successCount": 1, "retryCount": 0, "errorCount": 0}
    assert (status, env["data"]) == (200, {**one, "byType": by_type({"order.closed": one})})
    assert merchant.requests and '"type":"order.closed"' in merchant.requests[0][1]

    text = await scrape(api)
    assert sample(text, success) == before + 1
    for kind in TYPES:  # every type and status is exposed, zeros included
        for status_code in range(4):
            assert f'groupbuy_notify_tasks{{status="{status_code}",type="{kind}"}}' in text
        assert f'groupbuy_notify_due{{type="{kind}"}}' in text
    delivered = await pool.fetchval(
        "SELECT count(*) FROM notify_task WHERE notify_status = 1 AND event_type = 'order.closed'"
    )
    assert sample(text, 'groupbuy_notify_tasks{status="1",type="order.closed"}') == delivered >= 1


async def test_notify_cli_counts_by_type(
    settings: Settings, pool: asyncpg.Pool, merchant: Merchant
) -> None:
    from groupbuy_async.cli import notify

    async def busy(_: int) -> web.Response:
        return web.Response(status=503, text="busy")

    merchant.behaviour = busy
    team_id = await bare_team(pool)
    await enqueue(pool, event(EventType.TEAM_FAILED, team_id, merchant.url))
    counts = await notify(settings, team_id)
    one = {"waitCount": 1, "successCount": 0, "retryCount": 1, "errorCount": 0}
    assert counts == {**one, "byType": by_type({"team.failed": one})}
