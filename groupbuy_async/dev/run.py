"""`dev` / `make run`: embedded servers when none are configured, migrations, demo data,
the API and the worker in one process, and curl lines to try it."""

import asyncio
import logging
import os
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from ..bootstrap import Services
from ..db import create_pool, migrate
from ..http.app import create_app
from ..http.server import start_api
from ..merchants import accounts, endpoints, keys
from ..merchants.secret_box import SecretBox, new_sealing_key
from ..process.reasons import server_address
from ..process.signals import Stop, run_until_signalled
from ..process.startup import StartupError
from ..settings import Settings
from ..trade import catalog
from ..trade.models import Activity, Discount, Goods, Sku
from ..worker.arq_worker import build_worker
from ..worker.context import shutdown
from ..worker.run import finish_jobs, quietly
from .merchant import MOCK_MERCHANT_PATH, mock_merchant_routes

log = logging.getLogger("groupbuy_async.dev")

DEMO_ACTIVITY, DEMO_GOODS, DEMO_DISCOUNT = 100123, "9890001", "25120207"
DEV_ADMIN_TOKEN = "dev-admin-token"
TEAM_ID = 'python3 -c \'import json,sys; print(json.load(sys.stdin)["data"]["teamId"])\''


async def load_demo(dsn: str) -> None:
    """The original's sample: goods 9890001 at 100.00, 20 off (ZJ), teams of 3. Loaded once:
    what an operator changed later, and every order, stays across restarts."""
    pool = await create_pool(dsn, 1, 2)
    try:
        if await catalog.get_activity(pool, DEMO_ACTIVITY) is not None:
            log.info(
                "demo activity %d already loaded; data persists in the data dir", DEMO_ACTIVITY
            )
            return
        await catalog.put_discount(
            pool,
            DEMO_DISCOUNT,
            Discount(
                discount_name="直减优惠20元",
                discount_desc="20 off",
                market_plan="ZJ",
                market_expr="20",
            ),
        )
        await catalog.put_sku(
            pool,
            DEMO_GOODS,
            Sku(
                goods_name="《手写MyBatis 渐进式源码实践》",
                original_price=Decimal("100.00"),
                source="s01",
                channel="c01",
            ),
        )
        now = datetime.now(UTC)
        await catalog.put_activity(
            pool,
            DEMO_ACTIVITY,
            Activity(
                activity_name="测试活动 demo",
                discount_id=DEMO_DISCOUNT,
                target=3,
                valid_time=15,
                take_limit_count=1,
                status=1,
                start_time=now - timedelta(days=1),
                end_time=now + timedelta(days=365),
                goods=[Goods(source="s01", channel="c01", goods_id=DEMO_GOODS)],
            ),
        )
    finally:
        await pool.close()


DEMO_MERCHANT = "demo"
DEMO_ENDPOINT = "mock"


async def demo_key(dsn: str) -> str:
    """The demo merchant (holding the demo's s01/c01; made once) and a new API key of it for
    this run: the previous runs' keys are revoked."""
    pool = await create_pool(dsn, 1, 2)
    try:
        if await accounts.get_merchant(pool, DEMO_MERCHANT) is None:
            await accounts.put_merchant(pool, DEMO_MERCHANT, "demo shop", [("s01", "c01")])
        for old in await keys.list_keys(pool, DEMO_MERCHANT):
            if not old.revoked:
                await keys.revoke_key(pool, DEMO_MERCHANT, old.key_id)
        created = await keys.create_key(pool, DEMO_MERCHANT)
    finally:
        await pool.close()
    if created is None:
        raise LookupError("the demo merchant vanished")
    return created.key


def curl_lines(base: str, token: str, key: str) -> str:
    """Ready-to-paste curl lines: the shop's with the merchant's API key, the operator's
    with the admin token."""
    notify = f"{base}/api/v1/test/group_buy_notify"
    shop = f"-H 'Authorization: Bearer {key}'"
    lock = (
        f"curl -s -w '\\n' {base}/api/v1/gbm/trade/lock_market_pay_order {shop}"
        " -H 'Content-Type: application/json'"
        ' -d \'{"userId":"USER","activityId":%d,"goodsId":"%s","source":"s01","channel":"c01",'
        '"outTradeNo":"OTN"%s}\''
    )
    settle = (
        f"curl -s -w '\\n' {base}/api/v1/gbm/trade/settlement_market_pay_order {shop}"
        ' -H \'Content-Type: application/json\' -d \'{"source":"s01","channel":"c01",'
        '"userId":"USER","outTradeNo":"OTN","outTradeTime":"\'$(date -Iseconds)\'"}\''
    )
    refund = (
        f"curl -s -w '\\n' {base}/api/v1/gbm/trade/refund_market_pay_order {shop}"
        ' -H \'Content-Type: application/json\' -d \'{"source":"s01","channel":"c01",'
        '"userId":"USER","outTradeNo":"OTN"}\''
    )
    first = lock % (DEMO_ACTIVITY, DEMO_GOODS, "")
    join = lock % (DEMO_ACTIVITY, DEMO_GOODS, ',"teamId":"\'$TEAM\'"')
    run = "$(date +%s)"
    lines = [
        "# price trial and joinable teams",
        f"curl -s -w '\\n' {base}/api/v1/gbm/index/query_group_buy_market_config {shop}"
        " -H 'Content-Type: application/json'"
        f' -d \'{{"userId":"u1","source":"s01","channel":"c01","goodsId":"{DEMO_GOODS}"}}\'',
        "# three shoppers: the first opens a team, two join it (RUN keeps ids fresh per try);"
        " the team's events go to the merchant's endpoints",
        f"RUN={run}",
        "TEAM=$("
        + first.replace("USER", "u1-'$RUN'").replace("OTN", "o1-'$RUN'")
        + f" | {TEAM_ID})",
        "echo team $TEAM",
        join.replace("USER", "u2-'$RUN'").replace("OTN", "o2-'$RUN'"),
        join.replace("USER", "u3-'$RUN'").replace("OTN", "o3-'$RUN'"),
        "# all three pay; the third settlement completes the team and fires the callback",
        *(settle.replace("USER", f"u{i}-'$RUN'").replace("OTN", f"o{i}-'$RUN'") for i in (1, 2, 3)),
        f"curl -s -w '\\n' {shop} {base}/api/v1/gbm/teams/$TEAM",
        "# u1 returns the goods: refundType paid_team, the team becomes 3 (complete with"
        " refunds); the merchant gets an order.refunded event with the worker's next drain",
        refund.replace("USER", "u1-'$RUN'").replace("OTN", "o1-'$RUN'"),
        f"curl -s -w '\\n' {notify}   # callbacks the mock merchant (endpoint mock) verified",
        f"curl -s -w '\\n' -H 'Authorization: Bearer {token}'"
        f" {base}/api/v1/admin/merchants/{DEMO_MERCHANT}/endpoints",
        f"curl -s -w '\\n' -H 'Authorization: Bearer {token}' {base}/api/v1/admin/notify_tasks",
    ]
    return "\n".join(lines) + "\n"


async def run_dev(settings: Settings) -> None:
    """`dev` until SIGINT/SIGTERM. An embedded server that cannot start is a StartupError (a
    missing `embedded` extra one line naming it, a failed start the server's log tail)."""
    from .host import EmbeddedServerError

    try:
        await _run_dev(settings)
    except EmbeddedServerError as exc:
        raise StartupError(str(exc)) from None


def kept_secrets_key(data_dir: Path) -> str:
    """dev's GROUPBUY_SECRETS_KEY: made on the first run and kept beside the servers' data
    (the endpoints' secrets in that database are sealed with it)."""
    path = data_dir / "secrets.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(new_sealing_key() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


async def demo_endpoint(dsn: str, settings: Settings) -> None:
    """The demo merchant's endpoint `mock`: the mock merchant on the API's port (made once;
    moved when the port changes)."""
    url = f"http://{settings.host}:{settings.port}{MOCK_MERCHANT_PATH}"
    pool = await create_pool(dsn, 1, 2)
    try:
        box = SecretBox(settings.sealing_key or "")
        try:
            current = await endpoints.get_endpoint(pool, DEMO_MERCHANT, DEMO_ENDPOINT)
        except endpoints.EndpointNotFound:
            current = None
        if current is None or current.url != url or current.disabled:
            spec = endpoints.EndpointSpec(url, description="the mock merchant of `make run`")
            await endpoints.put_endpoint(pool, box, DEMO_MERCHANT, DEMO_ENDPOINT, spec, False)
    finally:
        await pool.close()


async def _run_dev(settings: Settings) -> None:
    from .embedded import servers_or_embedded

    key_given = settings.secrets_key is not None
    # Servers a killed earlier run left are reused, and stopped with this run (adopt).
    with servers_or_embedded(
        settings.database_url, settings.redis_url, settings.data_dir, adopt=True
    ) as (database_url, redis_url):
        log.info(
            "PostgreSQL at %s, Redis at %s",
            server_address(database_url),
            server_address(redis_url),
        )
        settings = settings.model_copy(
            update={
                "database_url": database_url,
                "redis_url": redis_url,
                "admin_token": settings.admin_token or DEV_ADMIN_TOKEN,
                "secrets_key": settings.sealing_key or kept_secrets_key(settings.data_dir),
                "mock_merchant": True,
                "notify_block_private": False,
            }
        )
        log.warning(
            "dev mode: mock merchant served (it verifies callback signatures), private callback"
            " targets allowed, admin token %r, endpoint secrets sealed with %s; never run"
            " `dev` in production",
            settings.admin_secret,
            "GROUPBUY_SECRETS_KEY" if key_given else f"the key kept in {settings.data_dir}",
        )
        await migrate(database_url)
        await load_demo(database_url)
        key = await demo_key(database_url)
        await demo_endpoint(database_url, settings)
        worker_died: list[BaseException] = []
        await run_until_signalled(lambda: _start(settings, key, worker_died))
        if worker_died:
            raise SystemExit(1)


async def _start(settings: Settings, key: str, worker_died: list[BaseException]) -> Stop:
    stop_api = await start_api(create_app(settings, mock_merchant_routes(settings)), settings)
    worker = build_worker(settings)
    worker_task = asyncio.create_task(worker.async_run())

    def worker_ended(task: asyncio.Task[None]) -> None:
        # The worker's loop never ends by itself: stop everything rather than run on idle.
        if task.cancelled():
            return
        exc = task.exception() or RuntimeError("the worker's loop ended")
        log.error("worker stopped: %s; stopping dev", exc)
        worker_died.append(exc)
        os.kill(os.getpid(), signal.SIGTERM)

    worker_task.add_done_callback(worker_ended)
    base = f"http://{settings.host}:{settings.port}"
    print(f"\ngroupbuy-async is up at {base}  (admin token: {settings.admin_secret})")
    print(f"demo merchant {DEMO_MERCHANT!r} (s01/c01), API key for this run: {key}")
    print(f"its endpoint {DEMO_ENDPOINT!r}: the mock merchant, which verifies each callback")
    print(f"OpenAPI: {base}/openapi.json   Ctrl-C stops everything.\n")
    print(curl_lines(base, settings.admin_secret or "", key), flush=True)

    async def stop() -> None:
        worker_task.remove_done_callback(worker_ended)
        # As the worker process does on SIGTERM: no new job, and a drain's sends in flight
        # finish and are recorded, what it claimed but did not send handed back due now.
        worker.allow_pick_jobs = False
        services: Services | None = worker.ctx.get("services")
        if services is not None:
            services.dispatcher.stop()
        await finish_jobs(worker, settings.notify_timeout_seconds + 5)
        # Closing talks to Redis, which may be what the worker lost (said already).
        await quietly(worker.close())
        await shutdown(worker.ctx)  # a no-op when close() got to run it
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)
        await stop_api()

    return stop
