"""Events over HTTP: per-type counts and metrics, the per-event views, the feed; the order
pull merchants reconcile with."""

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import asyncpg

from groupbuy_async.callbacks import outbox
from groupbuy_async.callbacks.events import Event, EventType
from groupbuy_async.callbacks.feed import _HORIZON
from groupbuy_async.dev.outbox_fill import completed_teams
from groupbuy_async.merchants.secret_box import SecretBox
from groupbuy_async.settings import Settings

from ..conftest import SECRET, SECRETS_KEY, Api, make_tasks, sample
from ..merchant import LocalMerchant, answering

NO_COUNTS = {"waitCount": 0, "successCount": 0, "retryCount": 0, "errorCount": 0}
TYPES = [str(t) for t in EventType]


async def bare_team(pool: asyncpg.Pool) -> str:
    """A complete team with no event yet: each test writes the events it needs."""
    await make_tasks(pool, 0, "http://127.0.0.1:9/unused")  # the outbox tests' activity (1)
    team_id = str(uuid.uuid4().int)[:20]
    await pool.execute(
        "INSERT INTO group_buy_order (team_id, activity_id, source, channel, original_price,"
        " deduction_price, pay_price, target_count, complete_count, lock_count, status,"
        " valid_start_time, valid_end_time, notify_url) VALUES ($1, 1, 'fill', 'fill', 100, 20,"
        " 80, 1, 1, 1, 1, now(), now() + interval '15 minutes', 'http://127.0.0.1:9/unused')",
        team_id,
    )
    return team_id


def event(kind: EventType, team_id: str, url: str, order_id: str | None = None) -> Event:
    data: dict[str, Any] = {"teamId": team_id, "activityId": 1}
    if order_id is not None:
        data |= {"orderId": order_id, "outTradeNo": f"out-{order_id}", "userId": "u1"}
    return Event(kind, team_id, 1, url, data, order_id)


async def enqueue(pool: asyncpg.Pool, *events: Event, listed: bool = True) -> list[str]:
    """Write events as the state changes that report them do, in one transaction; then,
    unless told not to, wait until the feed lists them (see caught_up)."""
    for url in {e.notify_url for e in events}:  # an endpoint of the team's merchant there
        await completed_teams(pool, SecretBox(SECRETS_KEY), 0, url, SECRET)
    async with pool.acquire() as conn, conn.transaction():
        written = await outbox.enqueue(conn, list(events))
    if listed:
        await caught_up(pool)
    return written


async def caught_up(pool: asyncpg.Pool) -> None:
    """Wait until the feed lists every event committed: until no transaction of this
    database that began before the last one's is still open. The tests' own have ended;
    this waits out whatever else holds one open for a moment (background sends of earlier
    tests, autovacuum's ANALYZE), and on failure says which were open."""
    every_one_listed = f"SELECT (SELECT coalesce(max(xact_id), '0') FROM event) < ({_HORIZON})"
    try:
        async with asyncio.timeout(30):  # generous: the suite may share a loaded server
            while not await pool.fetchval(every_one_listed):
                await asyncio.sleep(0.02)
    except TimeoutError:
        holding = await pool.fetch(
            "SELECT pid, datname, backend_xid, state, xact_start, left(query, 80) AS query"
            " FROM pg_stat_activity WHERE backend_xid IS NOT NULL"
        )
        horizon = await pool.fetchval(f"SELECT ({_HORIZON})::text")
        last = await pool.fetchval("SELECT max(xact_id)::text FROM event")
        raise AssertionError(
            f"feed horizon {horizon} <= {last}: {[dict(r) for r in holding]}"
        ) from None


def by_type(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {t: counts.get(t, NO_COUNTS) for t in TYPES}


# --- per-type counts and metrics -----------------------------------------------------------


async def test_run_counts_and_metrics_carry_the_event_type(
    api: Api, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    success = 'groupbuy_notify_attempts_total{outcome="success",type="order.closed"}'
    before = sample(await api.metrics(), success)
    team_id = await bare_team(pool)
    await enqueue(pool, event(EventType.ORDER_CLOSED, team_id, merchant.url, f"{team_id}1"))

    status, env = await api.call(
        "POST", "/api/v1/admin/notify/run", {"teamId": team_id}, admin=True
    )
    one = {"waitCount": 1, "successCount": 1, "retryCount": 0, "errorCount": 0}
    assert (status, env["data"]) == (200, {**one, "byType": by_type({"order.closed": one})})
    assert merchant.received and '"type":"order.closed"' in merchant.received[0].body

    text = await api.metrics()
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
    settings: Settings, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    from groupbuy_async.cli import notify

    merchant.answer = answering(503, "busy")
    team_id = await bare_team(pool)
    await enqueue(pool, event(EventType.TEAM_FAILED, team_id, merchant.url))
    counts = await notify(settings, team_id)
    one = {"waitCount": 1, "successCount": 0, "retryCount": 1, "errorCount": 0}
    assert counts == {**one, "byType": by_type({"team.failed": one})}


# --- one event: view and replay ---------------------------------------------------------


async def test_event_detail_and_replay(
    api: Api, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    merchant.answer = answering(410, "gone")
    team_id = await bare_team(pool)
    order_id = f"{team_id}7"
    (event_id,) = await enqueue(
        pool, event(EventType.ORDER_REFUNDED, team_id, merchant.url, order_id)
    )
    run = "/api/v1/admin/notify/run"
    assert (await api.call("POST", run, {"teamId": team_id}, admin=True))[1]["data"][
        "errorCount"
    ] == 1

    path = f"/api/v1/admin/events/{event_id}"
    status, env = await api.call("GET", path, admin=True)
    assert status == 200, env
    detail = env["data"]
    assert (detail["eventId"], detail["type"], detail["orderId"]) == (
        event_id, "order.refunded", order_id,
    )  # fmt: skip
    assert detail["notifyStatus"] == 3 and detail["nextAttemptAt"] is None
    assert [a["httpStatus"] for a in detail["attempts"]] == [410]
    (sent,) = merchant.received
    sent_body = sent.body
    assert detail["data"] == json.loads(sent_body)["data"]  # what was sent
    assert detail["data"]["orderId"] == order_id and detail["data"]["eventId"] == event_id
    _, team_view = await api.call("GET", "/api/v1/admin/notify_tasks?teamId=" + team_id, admin=True)
    (task,) = team_view["data"]
    assert set(detail) == set(task) | {"attempts", "deliveries", "data"}

    merchant.answer = None
    status, env = await api.call("POST", f"{path}/replay", admin=True)
    assert status == 200 and env["data"]["notifyStatus"] == 2 and env["data"]["nextAttemptAt"]
    assert env["data"]["eventId"] == event_id
    _, env = await api.call("POST", run, {"teamId": team_id}, admin=True)
    assert env["data"]["byType"]["order.refunded"]["successCount"] == 1
    status, env = await api.call("POST", f"{path}/replay", admin=True)
    assert (status, env["code"]) == (409, "E0201") and "status 1" in env["info"]
    _, env = await api.call("GET", path, admin=True)
    assert [a["httpStatus"] for a in env["data"]["attempts"]] == [410, 200]
    assert set(merchant.ids) == {event_id}  # one event id on every attempt, replay included


async def test_event_paths_refuse_unknown_and_bad_ids_and_need_the_token(api: Api) -> None:
    unknown = f"/api/v1/admin/events/{uuid.uuid4()}"
    for method, path in (("GET", unknown), ("POST", f"{unknown}/replay")):
        status, env = await api.call(method, path, admin=True)
        assert (status, env["code"]) == (404, "0404"), env
        assert (await api.call(method, path))[0] == 401
    for method, path in (
        ("GET", "/api/v1/admin/events/not-a-uuid"),
        ("POST", "/api/v1/admin/events/12345/replay"),
    ):
        status, env = await api.call(method, path, admin=True)
        assert (status, env["code"]) == (400, "0002") and "eventId" in env["info"]


async def test_team_paths_keep_naming_the_team_completed_event(
    api: Api, pool: asyncpg.Pool
) -> None:
    (team_id,) = await make_tasks(pool, 1, "http://127.0.0.1:9/cb")  # its team.completed
    await enqueue(pool, event(EventType.ORDER_CLOSED, team_id, "http://127.0.0.1:9/cb", "o1"))
    status, env = await api.call("GET", f"/api/v1/admin/notify_tasks/{team_id}", admin=True)
    assert status == 200 and env["data"]["type"] == "team.completed"
    failed_only = await bare_team(pool)
    await enqueue(pool, event(EventType.TEAM_FAILED, failed_only, "http://127.0.0.1:9/cb"))
    for method, path in (
        ("GET", f"/api/v1/admin/notify_tasks/{failed_only}"),
        ("POST", f"/api/v1/admin/notify_tasks/{failed_only}/replay"),
    ):
        assert (await api.call(method, path, admin=True))[0] == 404
    # Its event is reached by id.
    _, env = await api.call("GET", f"/api/v1/admin/events?teamId={failed_only}", admin=True)
    (only,) = env["data"]["items"]
    status, env = await api.call("GET", f"/api/v1/admin/events/{only['eventId']}", admin=True)
    assert status == 200 and env["data"]["type"] == "team.failed"


# --- the feed ---------------------------------------------------------------------------

FEED = "/api/v1/admin/events"


async def feed(api: Api, **params: Any) -> tuple[int, dict[str, Any]]:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return await api.call("GET", f"{FEED}?{query}" if query else FEED, admin=True)


async def page(api: Api, **params: Any) -> dict[str, Any]:
    status, env = await feed(api, **params)
    assert status == 200, env
    return env["data"]  # type: ignore[no-any-return]


async def read_all(api: Api, after: str | None, limit: int, **params: Any) -> list[list[str]]:
    """Every page from `after` to the end: the event ids of each."""
    pages: list[list[str]] = []
    while True:
        data = await page(api, after=after, limit=limit, **params)
        pages.append([item["eventId"] for item in data["items"]])
        if data["nextCursor"] is None:
            return pages
        assert data["nextCursor"] == pages[-1][-1]  # the cursor is the last item's eventId
        after = data["nextCursor"]


def flat(pages: list[list[str]]) -> list[str]:
    return [event_id for listed in pages for event_id in listed]


async def last_event(pool: asyncpg.Pool) -> str | None:
    """Where the feed ends now: the cursor past every event already written."""
    found = await pool.fetchval("SELECT event_id FROM event ORDER BY xact_id DESC, id DESC")
    return None if found is None else str(found)


async def test_team_events_are_listed(api: Api, pool: asyncpg.Pool) -> None:
    (team_id,) = await make_tasks(pool, 1, "http://127.0.0.1:9/cb")
    url = "http://127.0.0.1:9/cb"
    later = await enqueue(
        pool,
        event(EventType.ORDER_CLOSED, team_id, url, f"{team_id}1"),
        event(EventType.ORDER_REFUNDED, team_id, url, f"{team_id}2"),
        event(EventType.TEAM_FAILED, team_id, url),
    )
    other = await bare_team(pool)
    await enqueue(pool, event(EventType.TEAM_FAILED, other, url))
    data = await page(api, teamId=team_id)
    assert data["nextCursor"] is None
    items = data["items"]
    completed = str(await pool.fetchval("SELECT event_id FROM notify_task WHERE team_id = $1"
                                        " AND event_type = 'team.completed'", team_id))  # fmt: skip
    assert [i["eventId"] for i in items] == [completed, *later]  # in the order written
    assert [i["type"] for i in items] == [
        "team.completed", "order.closed", "order.refunded", "team.failed"
    ]  # fmt: skip
    for item in items:
        assert set(item) == {
            "eventId", "type", "teamId", "orderId", "notifyStatus", "createTime", "data"
        }  # fmt: skip
        assert item["teamId"] == team_id and item["notifyStatus"] == 0
    assert items[1]["orderId"] == f"{team_id}1" and items[1]["data"]["orderId"] == f"{team_id}1"
    assert items[1]["data"]["eventId"] == items[1]["eventId"]
    # make_tasks writes the callback's flat form, as bodies before typed events were.
    assert items[0]["data"] == {
        "teamId": team_id, "outTradeNoList": [], "activityId": 1, "eventId": items[0]["eventId"]
    }  # fmt: skip
    assert [
        i["eventId"] for i in (await page(api, teamId=team_id, type="order.refunded"))["items"]
    ] == [later[1]]


async def test_feed_pages_through_every_event_once(api: Api, pool: asyncpg.Pool) -> None:
    start = await last_event(pool)
    url = "http://127.0.0.1:9/cb"
    written: list[str] = []
    for _ in range(5):  # five transactions of four events each
        team_id = await bare_team(pool)
        written += await enqueue(
            pool,
            event(EventType.TEAM_FAILED, team_id, url),
            event(EventType.ORDER_CLOSED, team_id, url, f"{team_id}1"),
            event(EventType.ORDER_REFUNDED, team_id, url, f"{team_id}1"),
            event(EventType.ORDER_CLOSED, team_id, url, f"{team_id}2"),
        )
    assert len(written) == 20
    pages = await read_all(api, start, 5)
    assert [len(p) for p in pages] == [5, 5, 5, 5]  # the last page is full: nextCursor null
    assert flat(pages) == written  # no gaps, no duplicates, in the order written
    pages = await read_all(api, start, 7)
    assert [len(p) for p in pages] == [7, 7, 6] and flat(pages) == written
    # Any eventId read from the feed resumes after it.
    assert flat(await read_all(api, written[9], 500)) == written[10:]
    assert (await page(api, after=written[-1]))["items"] == []

    # The default page is 100 events.
    team_id = await bare_team(pool)
    many = await enqueue(
        pool, *[event(EventType.ORDER_CLOSED, team_id, url, f"{team_id}-{n}") for n in range(101)]
    )
    data = await page(api, after=written[-1])
    assert [i["eventId"] for i in data["items"]] == many[:100] and data["nextCursor"] == many[99]


async def test_feed_filters_by_type(api: Api, pool: asyncpg.Pool) -> None:
    start = await last_event(pool)
    url = "http://127.0.0.1:9/cb"
    closed: list[str] = []
    for _ in range(3):
        team_id = await bare_team(pool)
        ids = await enqueue(
            pool,
            event(EventType.TEAM_FAILED, team_id, url),
            event(EventType.ORDER_CLOSED, team_id, url, f"{team_id}1"),
            event(EventType.ORDER_CLOSED, team_id, url, f"{team_id}2"),
        )
        closed += ids[1:]
    pages = await read_all(api, start, 4, type="order.closed")
    assert [len(p) for p in pages] == [4, 2] and flat(pages) == closed
    data = await page(api, after=start, type="team.completed")
    assert data == {"items": [], "nextCursor": None, "retainedSince": None}


async def test_feed_input_is_validated_and_needs_the_token(api: Api) -> None:
    assert (await api.call("GET", FEED))[0] == 401
    assert (await api.call("GET", f"{FEED}?limit=5"))[0] == 401
    bad: list[dict[str, Any]] = [
        {"limit": 0}, {"limit": 501}, {"limit": "abc"}, {"type": "order.paid"},
        {"type": "TEAM.COMPLETED"}, {"teamId": "abc"}, {"after": "not-a-uuid"},
        {"after": str(uuid.uuid4())},  # no such event
    ]  # fmt: skip
    for params in bad:
        status, env = await feed(api, **params)
        assert (status, env["code"]) == (400, "0002"), (params, env)
        assert next(iter(params)) in env["info"], (params, env)
    status, env = await feed(api, limit=500, type="team.completed")
    assert status == 200 and len(env["data"]["items"]) <= 500


async def ids_after(api: Api, pool: asyncpg.Pool, after: str | None) -> list[str]:
    """The whole feed past `after`, once it lists every event committed."""
    await caught_up(pool)
    return flat(await read_all(api, after, 500))


async def test_feed_never_passes_an_event_committed_late(
    api: Api, pool: asyncpg.Pool, database_url: str
) -> None:
    """Ids are taken at insert: an event committed late can carry a smaller id than one
    already committed. The feed lists neither until the late one's transaction ends, then
    both, so a reader never moves past a position an event can still appear at."""
    start = await last_event(pool)
    url = "http://127.0.0.1:9/cb"
    slow_team, quick_team = await bare_team(pool), await bare_team(pool)
    other_process = await asyncpg.connect(database_url)
    try:
        slow = other_process.transaction()
        await slow.start()
        (late,) = await outbox.enqueue(
            other_process, [event(EventType.TEAM_FAILED, slow_team, url)]
        )
        (quick,) = await enqueue(pool, event(EventType.TEAM_FAILED, quick_team, url), listed=False)
        ids = await pool.fetch(
            "SELECT id FROM event WHERE team_id = ANY($1::text[]) ORDER BY id",
            [slow_team, quick_team],
        )
        assert len(ids) == 1  # only the quick one is committed, with the larger id
        assert (await page(api, after=start)) == {
            "items": [],
            "nextCursor": None,
            "retainedSince": None,
        }
        # Held back from the feed only: its own view shows it at once.
        status, env = await api.call("GET", f"/api/v1/admin/events/{quick}", admin=True)
        assert status == 200 and env["data"]["type"] == "team.failed"
        await slow.commit()
    finally:
        await other_process.close()
    assert await ids_after(api, pool, start) == [late, quick]


async def test_feed_is_in_transaction_order_not_id_order(
    api: Api, pool: asyncpg.Pool, database_url: str
) -> None:
    """A settlement that began writing first is listed first, though its event was written
    after one a quicker transaction committed meanwhile."""
    start = await last_event(pool)
    url = "http://127.0.0.1:9/cb"
    first_team, second_team = await bare_team(pool), await bare_team(pool)
    other_process = await asyncpg.connect(database_url)
    try:
        async with other_process.transaction():
            # The state change comes first (this takes the transaction's id) ...
            await other_process.execute(
                "UPDATE group_buy_order SET update_time = now() WHERE team_id = $1", first_team
            )
            (second,) = await enqueue(
                pool, event(EventType.TEAM_FAILED, second_team, url), listed=False
            )
            assert (await page(api, after=start))["items"] == []
            # ... its event after, with a larger id than the one committed meanwhile.
            (first,) = await outbox.enqueue(
                other_process, [event(EventType.TEAM_FAILED, first_team, url)]
            )
    finally:
        await other_process.close()
    ids = {
        str(r["event_id"]): r["id"]
        for r in await pool.fetch(
            "SELECT event_id, id FROM event WHERE event_id = ANY($1::uuid[])",
            [first, second],
        )
    }
    assert ids[first] > ids[second]
    assert await ids_after(api, pool, start) == [first, second]


async def test_feed_is_not_held_back_by_other_databases(
    api: Api, pool: asyncpg.Pool, server_urls: tuple[str, str]
) -> None:
    start = await last_event(pool)
    team_id = await bare_team(pool)
    elsewhere = await asyncpg.connect(server_urls[0])  # the server's admin database
    try:
        async with elsewhere.transaction():
            await elsewhere.fetchval("SELECT pg_current_xact_id()")  # open, with an id
            (written,) = await enqueue(
                pool, event(EventType.TEAM_FAILED, team_id, "http://127.0.0.1:9/cb")
            )
            assert [i["eventId"] for i in (await page(api, after=start))["items"]] == [written]
    finally:
        await elsewhere.close()


async def test_openapi_describes_the_event_endpoints(api: Api) -> None:
    from typing import get_args

    from groupbuy_async.http.callback_schemas import EventTypeName

    assert set(get_args(EventTypeName)) == set(TYPES)
    async with api.client.get("/openapi.json") as resp:
        doc = await resp.json()
    paths = doc["paths"]
    listing = paths["/api/v1/admin/events"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert set(params) == {"after", "type", "teamId", "limit"}
    assert not any(p["required"] for p in params.values())
    assert params["type"]["schema"]["anyOf"][0]["enum"] == TYPES
    assert listing["security"] == [{"adminToken": []}]
    schemas = doc["components"]["schemas"]
    assert "transactions" in schemas["EventPage"]["properties"]["items"]["description"]
    assert set(schemas["EventDetail"]["properties"]) >= {"attempts", "data", "type", "orderId"}
    for path in ("/api/v1/admin/events/{eventId}", "/api/v1/admin/events/{eventId}/replay"):
        (operation,) = paths[path].values()
        (param,) = operation["parameters"]
        assert param["in"] == "path" and param["schema"]["format"] == "uuid"
        assert {"400", "401", "404"} <= set(operation["responses"])
    assert "byType" in schemas["NotifyCounts"]["properties"]


# --- order pull ---------------------------------------------------------------------------


async def test_order_pull_follows_an_order_through_its_statuses(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity(target=2)
    where = {"source": act["source"], "channel": act["channel"]}
    outs = [f"pull-{uuid.uuid4().hex[:12]}" for _ in range(2)]

    async def pull(user: str, out: str) -> dict[str, Any]:
        query = urlencode({**where, "userId": user})
        status, env = await api.call("GET", f"/api/v1/gbm/orders/{out}?{query}")
        assert (status, env["code"]) == (200, "0000"), env
        return env["data"]  # type: ignore[no-any-return]

    _, env = await api.lock(**act, userId="p1", outTradeNo=outs[0])
    locked = env["data"]
    order = await pull("p1", outs[0])
    assert set(order) == {
        "orderId", "teamId", "activityId", "goodsId", "userId", "outTradeNo",
        "tradeOrderStatus", "teamStatus", "originalPrice", "deductionPrice", "payPrice",
        "createTime", "outTradeTime", "updateTime",
    }  # fmt: skip
    assert order["orderId"] == locked["orderId"] and order["teamId"] == locked["teamId"]
    assert (order["activityId"], order["goodsId"]) == (act["activityId"], act["goodsId"])
    assert (order["userId"], order["outTradeNo"]) == ("p1", outs[0])
    assert (order["tradeOrderStatus"], order["teamStatus"]) == (0, 0)
    assert (order["originalPrice"], order["deductionPrice"], order["payPrice"]) == (100, 20, 80)
    assert order["outTradeTime"] is None and order["createTime"] <= order["updateTime"]

    paid_at = datetime.now(timezone(timedelta(hours=8))).isoformat()  # any offset is kept
    status, env = await api.settle(**where, userId="p1", outTradeNo=outs[0], outTradeTime=paid_at)
    assert status == 200, env
    locked_at = order["updateTime"]
    order = await pull("p1", outs[0])
    assert (order["tradeOrderStatus"], order["teamStatus"]) == (1, 0)
    assert datetime.fromisoformat(order["updateTime"]) > datetime.fromisoformat(locked_at)
    assert datetime.fromisoformat(order["outTradeTime"]) == datetime.fromisoformat(paid_at)

    await api.lock(**act, userId="p2", outTradeNo=outs[1], teamId=locked["teamId"])
    await api.settle(**where, userId="p2", outTradeNo=outs[1], outTradeTime=paid_at)
    assert (
        (await pull("p1", outs[0]))["tradeOrderStatus"],
        (await pull("p2", outs[1]))["teamStatus"],
    ) == (1, 1)  # the team completed

    # Refunded from the complete team, and a lock cancelled: 3 and 2, through the lifecycle.
    status, env = await api.refund(**where, userId="p1", outTradeNo=outs[0])
    assert (status, env["data"]["refundType"]) == (200, "paid_team"), env
    refunded = await pull("p1", outs[0])
    assert (refunded["tradeOrderStatus"], refunded["teamStatus"]) == (3, 3)
    cancelled = f"pull-{uuid.uuid4().hex[:12]}"
    await api.lock(**act, userId="p3", outTradeNo=cancelled)
    status, env = await api.refund(**where, userId="p3", outTradeNo=cancelled)
    assert (status, env["data"]["refundType"]) == (200, "unpaid"), env
    assert (await pull("p3", cancelled))["tradeOrderStatus"] == 2


async def test_order_pull_finds_only_the_owners_order(api: Api) -> None:
    act = await api.new_activity()
    out = f"pull-{uuid.uuid4().hex[:12]}"
    await api.lock(**act, userId="owner", outTradeNo=out)
    base = {"source": act["source"], "channel": act["channel"], "userId": "owner"}

    async def pull(out_trade_no: str, **params: str) -> tuple[int, dict[str, Any]]:
        query = urlencode({k: v for k, v in {**base, **params}.items() if v})
        return await api.call("GET", f"/api/v1/gbm/orders/{out_trade_no}?{query}")

    assert (await pull(out))[0] == 200
    for out_trade_no, params in (
        (out, {"userId": "someone-else"}),
        (out, {"source": "s99"}),  # another pair of the same merchant
        ("never-locked", {}),
    ):
        status, env = await pull(out_trade_no, **params)
        assert (status, env["code"]) == (404, "E0104"), (params, env)
    status, env = await pull(out, channel="c99")  # a pair the merchant does not hold
    assert (status, env["code"]) == (403, "0403"), env
    for missing in ("source", "channel", "userId"):
        status, env = await pull(out, **{missing: ""})
        assert (status, env["code"]) == (400, "0002") and missing in env["info"], env
    status, env = await pull("has%20space")
    assert (status, env["code"]) == (400, "0002") and "outTradeNo" in env["info"], env


async def test_openapi_describes_the_order_pull(api: Api) -> None:
    async with api.client.get("/openapi.json") as resp:
        doc = await resp.json()
    operation = doc["paths"]["/api/v1/gbm/orders/{outTradeNo}"]["get"]
    params = {p["name"]: (p["in"], p["required"]) for p in operation["parameters"]}
    assert params == {
        "outTradeNo": ("path", True), "source": ("query", True), "channel": ("query", True),
        "userId": ("query", True),
    }  # fmt: skip
    assert operation["security"] == [{"merchantKey": []}] and "404" in operation["responses"]
    assert {"401", "403"} <= set(operation["responses"])
    assert doc["components"]["securitySchemes"]["merchantKey"]["scheme"] == "bearer"
    status = doc["components"]["schemas"]["OrderOut"]["properties"]["tradeOrderStatus"]
    assert "3 refunded" in status["description"]
    # Optional query parameters stay optional.
    listing = doc["paths"]["/api/v1/admin/notify_tasks"]["get"]["parameters"]
    assert not any(p["required"] for p in listing)
