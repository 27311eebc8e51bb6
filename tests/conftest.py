"""Real PostgreSQL and Redis: GROUPBUY_TEST_DATABASE_URL / GROUPBUY_TEST_REDIS_URL, else embedded.

Each test session gets a fresh database (dropped at the end) and its own arq queue name.
"""

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from groupbuy_async.db import create_pool
from groupbuy_async.dev.databases import temporary_database
from groupbuy_async.dev.embedded import EmbeddedServer, start_redis
from groupbuy_async.dev.merchant import mock_merchant_routes
from groupbuy_async.dev.outbox_fill import Destination
from groupbuy_async.http.app import create_app
from groupbuy_async.settings import Settings

from . import contract

ADMIN_TOKEN = "test-admin-token"
# Seals endpoints' secrets in the tests' databases (GROUPBUY_SECRETS_KEY).
SECRETS_KEY = "rA-FQVO3wigthyj2RDALcqgn3CmUErYPfktyHBrXbl0="
METRICS_TOKEN = "test-metrics-token"
METRICS = {"Authorization": f"Bearer {METRICS_TOKEN}"}  # what Prometheus sends
# The merchant the tests trade as, and the pairs it holds (every pair the tests lock under).
SHOP_MERCHANT = "test-shop"
SHOP_PAIRS = [("s01", "c01"), ("s02", "c02"), ("s09", "c09"), ("s99", "c01")]
ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--faults", action="store_true", help="run the tests marked fault (make faults does)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fault scenarios (a server stopped and restarted) are `make faults`' to run: skipped,
    saying so, in `make test`."""
    if config.getoption("--faults"):
        return
    skip = pytest.mark.skip(reason="a fault scenario: make faults runs it (pytest --faults)")
    for item in items:
        if item.get_closest_marker("fault") is not None:
            item.add_marker(skip)


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A data folder for servers a test starts itself (embedded PostgreSQL runs as another
    user under root). Not pytest's tmp_path: every pytest session that starts resets
    /tmp/pytest-of-<user> to 0700, which would cut a running server off its own files."""
    path = Path(tempfile.mkdtemp(prefix="groupbuy-test-servers-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def own_redis(server_dir: Path) -> AsyncIterator[EmbeddedServer]:
    """A Redis server only this test uses (and may stop), never the shared one."""
    server = await asyncio.to_thread(start_redis, server_dir)
    yield server
    await asyncio.to_thread(server.stop)


async def keys_left(redis_url: str) -> dict[str, int]:
    """Every key in that Redis database, with its TTL in seconds (-1: none)."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        return {key.decode(): await redis.ttl(key) for key in await redis.keys("*")}
    finally:
        await redis.aclose()


@pytest.fixture(scope="session")
def server_urls() -> Iterator[tuple[str, str]]:
    from groupbuy_async.dev.embedded import servers_or_embedded

    with servers_or_embedded(
        os.environ.get("GROUPBUY_TEST_DATABASE_URL"),
        os.environ.get("GROUPBUY_TEST_REDIS_URL"),
        ROOT / ".data" / "test",
    ) as urls:
        yield urls


@contextlib.asynccontextmanager
async def own_pool(server_urls: tuple[str, str], name: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a database of its own (`name`_…), dropped afterwards: for tests whose drains
    take all that is due, or whose workers must not see another test's rows."""
    async with temporary_database(server_urls[0], name) as url:
        pool = await create_pool(url, 1, 10)
        try:
            yield pool
        finally:
            await pool.close()


@pytest.fixture(scope="session")
async def database_url(server_urls: tuple[str, str]) -> AsyncIterator[str]:
    async with temporary_database(server_urls[0], "groupbuy_test") as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, server_urls: tuple[str, str]) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=server_urls[1],
        admin_token=ADMIN_TOKEN,
        metrics_token=METRICS_TOKEN,
        secrets_key=SECRETS_KEY,
        sc_blacklist="s02c02",
        db_pool_max=40,
        # Merchants in tests are local servers, and some tests call the mock merchant.
        notify_block_private=False,
        mock_merchant=True,
    )


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    db = await create_pool(database_url, 1, 10)
    yield db
    await db.close()


async def start_client(settings: Settings) -> TestClient[Any, Any]:
    """The API as `api` serves it (with the mock merchant: the tests' settings ask for it)."""
    app = create_app(settings, mock_merchant_routes(settings))
    contract.watch(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture(autouse=True)
def answers_keep_the_contract() -> Iterator[None]:
    """Fails a test that got an answer its operation's OpenAPI does not declare."""
    contract.VIOLATIONS.clear()
    yield
    found, contract.VIOLATIONS[:] = list(contract.VIOLATIONS), []
    assert not found, "answers outside the OpenAPI contract:\n" + "\n".join(found)


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    c = await start_client(settings)
    yield c
    await c.close()


async def merchant_key(
    client: TestClient[Any, Any], merchant_id: str, pairs: list[tuple[str, str]]
) -> str:
    """Create (or replace) a merchant holding `pairs` and return a new API key of it."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"name": merchant_id, "bindings": [{"source": s, "channel": c} for s, c in pairs]}
    async with client.put(f"/api/v1/admin/merchants/{merchant_id}", json=body, headers=admin) as r:
        assert r.status == 200, await r.text()
    async with client.post(f"/api/v1/admin/merchants/{merchant_id}/keys", headers=admin) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["data"]["key"])


@pytest.fixture(scope="session")
async def shop_key(client: TestClient[Any, Any]) -> str:
    """The API key of the merchant the tests trade as."""
    return await merchant_key(client, SHOP_MERCHANT, SHOP_PAIRS)


def shop_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Api:
    """Calls the service as a client would; returns (HTTP status, envelope). Shop calls
    (/api/v1/gbm/*) carry the test merchant's key unless `key` says otherwise ("" for none)."""

    def __init__(
        self, client: TestClient[Any, Any], key: str, merchant_id: str = SHOP_MERCHANT
    ) -> None:
        self.client = client
        self.key = key
        self.merchant_id = merchant_id  # the key's
        self.shop = shop_headers(key)  # for requests made with the client directly
        self.endpoints: set[str] = set()  # urls made endpoints of the test merchant

    @classmethod
    async def for_client(cls, client: TestClient[Any, Any]) -> "Api":
        """An Api on another app (its own settings or database), with a key of the test
        merchant in that app's database."""
        return cls(client, await merchant_key(client, SHOP_MERCHANT, SHOP_PAIRS))

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        admin: bool = False,
        raw: str | None = None,
        key: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if admin else {}
        key = self.key if key is None else key
        if path.startswith("/api/v1/gbm/") and key:
            headers = shop_headers(key)
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.client.request(method, path, **kwargs) as resp:
            return resp.status, await resp.json()

    DEAD_URL = "http://127.0.0.1:9/notify"  # nothing listens: a callback fails at once

    async def lock(self, **body: Any) -> tuple[int, dict[str, Any]]:
        """A lock; its notifyUrl is made an endpoint of the test merchant first (signed with
        SECRET), so that the team's events go there, as the original's notifyUrl did."""
        url = body.get("notifyUrl")
        if isinstance(url, str) and url not in self.endpoints:
            await self.endpoint(url, self.merchant_id)
        return await self.call("POST", "/api/v1/gbm/trade/lock_market_pay_order", body)

    async def endpoint(self, url: str, merchant_id: str = SHOP_MERCHANT, **spec: Any) -> str:
        """An endpoint of the merchant at `url` (created signed with SECRET, else updated);
        returns its endpointId."""
        endpoint_id = "u" + uuid.uuid5(uuid.NAMESPACE_URL, url).hex[:16]
        path = f"/api/v1/admin/merchants/{merchant_id}/endpoints/{endpoint_id}"
        status, env = await self.call("GET", path, admin=True)
        body = {"url": url, **spec} if status == 200 else {"url": url, "secret": SECRET, **spec}
        status, env = await self.call("PUT", path, body, admin=True)
        assert status == 200, env
        if merchant_id == self.merchant_id:
            self.endpoints.add(url)
        return endpoint_id

    async def settle(self, **body: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", "/api/v1/gbm/trade/settlement_market_pay_order", body)

    async def refund(self, **body: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", "/api/v1/gbm/trade/refund_market_pay_order", body)

    async def team(self, team_id: str) -> dict[str, Any]:
        status, env = await self.call("GET", f"/api/v1/gbm/teams/{team_id}")
        assert status == 200, env
        return env["data"]  # type: ignore[no-any-return]

    async def market_config(self, user: str, act: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The price trial and joinable teams `user` is offered for the goods of `act`."""
        goods = {k: act[k] for k in ("source", "channel", "goodsId")}
        path = "/api/v1/gbm/index/query_group_buy_market_config"
        return await self.call("POST", path, {"userId": user, **goods})

    async def metrics(self) -> str:
        async with self.client.get("/metrics", headers=METRICS) as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            return await resp.text()

    async def new_activity(self, **overrides: Any) -> dict[str, Any]:
        """A fresh discount, goods and effective activity; returns ids for lock requests."""
        tag = uuid.uuid4().hex[:10]
        activity_id = int(uuid.uuid4().int % 10**12) + 1
        plan = overrides.pop("market_plan", "ZJ")
        expr = overrides.pop("market_expr", "20")
        price = overrides.pop("original_price", 100)
        source, channel = overrides.pop("source", "s01"), overrides.pop("channel", "c01")
        await self._put(f"/api/v1/admin/discounts/d{tag}", {
            "discountName": "test", "marketPlan": plan, "marketExpr": expr,
        })  # fmt: skip
        await self._put(f"/api/v1/admin/skus/g{tag}", {
            "goodsName": "goods", "originalPrice": price, "source": source, "channel": channel,
        })  # fmt: skip
        now = datetime.now(UTC)
        activity = {
            "activityName": "test activity",
            "discountId": f"d{tag}",
            "takeLimitCount": 1,
            "target": 3,
            "validTime": 15,
            "status": 1,
            "startTime": (now - timedelta(days=1)).isoformat(),
            "endTime": (now + timedelta(days=1)).isoformat(),
            "goods": [{"source": source, "channel": channel, "goodsId": f"g{tag}"}],
            **overrides,
        }
        await self._put(f"/api/v1/admin/activities/{activity_id}", activity)
        if self.DEAD_URL not in self.endpoints:  # locks name it: an endpoint of the merchant
            await self.endpoint(self.DEAD_URL, self.merchant_id)
        return {
            "activityId": activity_id,
            "goodsId": f"g{tag}",
            "source": source,
            "channel": channel,
            "notifyUrl": self.DEAD_URL,
        }

    async def _put(self, path: str, body: dict[str, Any]) -> None:
        status, env = await self.call("PUT", path, body, admin=True)
        assert status == 200, env


@pytest.fixture
def api(client: TestClient[Any, Any], shop_key: str) -> Api:
    return Api(client, shop_key)


async def wait_ready(
    http: aiohttp.ClientSession,
    base: str,
    proc: asyncio.subprocess.Process | subprocess.Popen[bytes],
    seconds: float = 30,
) -> None:
    """Until the API process at `base` answers /readyz with 200; it must not exit meanwhile."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                async with http.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            code = proc.poll() if isinstance(proc, subprocess.Popen) else proc.returncode
            assert code is None, f"exited with code {code}"
            await asyncio.sleep(0.1)


async def exited(proc: asyncio.subprocess.Process, seconds: float = 30) -> tuple[int, str]:
    """The exit code and output of a process expected to end within `seconds` (killed, and
    the test failed, if it does not)."""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"still running after {seconds}s:\n{out.decode()[-3000:]}") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def sample(text: str, name: str) -> float:
    """The value of the Prometheus sample `name` (with its labels) in `text`; 0 without it."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def new_id(prefix: str = "o") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def merchant() -> AsyncIterator[Any]:
    from .merchant import start_merchant

    m = await start_merchant()
    yield m
    await m.server.close()


@pytest.fixture
async def make_dispatcher(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Any]:
    """Dispatchers with their own settings and session, as separate processes would have."""
    from groupbuy_async.bootstrap import build_dispatcher
    from groupbuy_async.callbacks.dispatch import Dispatcher
    from groupbuy_async.callbacks.metrics import Metrics

    made: list[Dispatcher] = []

    def make(**overrides: Any) -> Dispatcher:
        s = settings.model_copy(update=overrides)
        made.append(build_dispatcher(pool, s, Metrics()))
        return made[-1]

    yield make
    for dispatcher in made:
        await dispatcher.close(grace_seconds=1)


async def make_tasks(pool: asyncpg.Pool, count: int, url: "Destination") -> list[str]:
    """Completed teams with their due callbacks (to an endpoint at `url`, or to a broker
    endpoint's exchange and routing key, signed with SECRET), written straight to the outbox."""
    from groupbuy_async.dev.outbox_fill import completed_teams
    from groupbuy_async.merchants.secret_box import SecretBox

    return await completed_teams(pool, SecretBox(SECRETS_KEY), count, url, SECRET)
