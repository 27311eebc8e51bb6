"""`dev` / `make run`: embedded servers when none are configured, migrations, demo data,
the API and the worker in one process, and curl lines to try it."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from aiohttp import web

from . import admin
from .__main__ import run_until_signalled
from .app import create_app
from .db import create_pool, migrate
from .models import ActivityIn, DiscountIn, GoodsRef, SkuIn
from .settings import Settings
from .worker import build_worker

log = logging.getLogger("groupbuy_async.dev")

DEMO_ACTIVITY, DEMO_GOODS, DEMO_DISCOUNT = 100123, "9890001", "25120207"
DEV_ADMIN_TOKEN = "dev-admin-token"
TEAM_ID = 'python3 -c \'import json,sys; print(json.load(sys.stdin)["data"]["teamId"])\''


async def load_demo(dsn: str) -> None:
    """The original's sample: goods 9890001 at 100.00, 20 off (ZJ), teams of 3."""
    pool = await create_pool(dsn, 1, 2)
    try:
        await admin.put_discount(pool, DEMO_DISCOUNT, DiscountIn(
            discount_name="直减优惠20元", discount_desc="20 off", market_plan="ZJ",
            market_expr="20",
        ))  # fmt: skip
        await admin.put_sku(pool, DEMO_GOODS, SkuIn(
            goods_name="《手写MyBatis 渐进式源码实践》", original_price=Decimal("100.00"),
            source="s01", channel="c01",
        ))  # fmt: skip
        now = datetime.now(UTC)
        await admin.put_activity(pool, DEMO_ACTIVITY, ActivityIn(
            activity_name="测试活动 demo", discount_id=DEMO_DISCOUNT, target=3, valid_time=15,
            take_limit_count=1, status=1, start_time=now - timedelta(days=1),
            end_time=now + timedelta(days=365),
            goods=[GoodsRef(source="s01", channel="c01", goods_id=DEMO_GOODS)],
        ))  # fmt: skip
    finally:
        await pool.close()


def curl_lines(base: str, token: str) -> str:
    notify = f"{base}/api/v1/test/group_buy_notify"
    lock = (
        f"curl -s {base}/api/v1/gbm/trade/lock_market_pay_order -H 'Content-Type: application/json'"
        ' -d \'{"userId":"USER","activityId":%d,"goodsId":"%s","source":"s01","channel":"c01",'
        '"outTradeNo":"OTN",%s"notifyUrl":"%s"}\''
    )
    settle = (
        f"curl -s {base}/api/v1/gbm/trade/settlement_market_pay_order"
        ' -H \'Content-Type: application/json\' -d \'{"source":"s01","channel":"c01",'
        '"userId":"USER","outTradeNo":"OTN","outTradeTime":"\'$(date -Iseconds)\'"}\''
    )
    first = lock % (DEMO_ACTIVITY, DEMO_GOODS, "", notify)
    join = lock % (DEMO_ACTIVITY, DEMO_GOODS, '"teamId":"\'$TEAM\'",', notify)
    run = "$(date +%s)"
    lines = [
        "# price trial and joinable teams",
        f"curl -s {base}/api/v1/gbm/index/query_group_buy_market_config"
        " -H 'Content-Type: application/json'"
        f' -d \'{{"userId":"u1","source":"s01","channel":"c01","goodsId":"{DEMO_GOODS}"}}\'',
        "# three shoppers: the first opens a team, two join it (RUN keeps ids fresh per try)",
        f"RUN={run}",
        "TEAM=$("
        + first.replace("USER", "u1-'$RUN'").replace("OTN", "o1-'$RUN'")
        + f" | {TEAM_ID})",
        "echo team $TEAM",
        join.replace("USER", "u2-'$RUN'").replace("OTN", "o2-'$RUN'"),
        join.replace("USER", "u3-'$RUN'").replace("OTN", "o3-'$RUN'"),
        "# all three pay; the third settlement completes the team and fires the callback",
        *(settle.replace("USER", f"u{i}-'$RUN'").replace("OTN", f"o{i}-'$RUN'") for i in (1, 2, 3)),
        f"curl -s {base}/api/v1/gbm/teams/$TEAM",
        f"curl -s {notify}   # callbacks the mock merchant received",
        f"curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/admin/notify_tasks",
    ]
    return "\n".join(lines)


async def run_dev(settings: Settings) -> None:
    from .embedded import servers_or_embedded

    with servers_or_embedded(settings.database_url, settings.redis_url, settings.data_dir) as (
        database_url,
        redis_url,
    ):
        log.info("PostgreSQL at %s, Redis at %s", database_url, redis_url)
        settings = settings.model_copy(update={
            "database_url": database_url, "redis_url": redis_url,
            "admin_token": settings.admin_token or DEV_ADMIN_TOKEN,
        })  # fmt: skip
        await migrate(database_url)
        await load_demo(database_url)
        await run_until_signalled(lambda: _start(settings))


async def _start(settings: Settings) -> Callable[[], Awaitable[None]]:
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    worker = build_worker(settings)
    worker_task = asyncio.create_task(worker.main())
    base = f"http://{settings.host}:{settings.port}"
    print(f"\ngroupbuy-async is up at {base}  (admin token: {settings.admin_token})")
    print(f"OpenAPI: {base}/openapi.json   Ctrl-C stops everything.\n")
    print(curl_lines(base, settings.admin_token or ""), flush=True)

    async def stop() -> None:
        await worker.close()
        worker_task.cancel()
        await runner.cleanup()

    return stop
