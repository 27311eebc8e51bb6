"""Callback delivery end to end: real PostgreSQL, a real local merchant, real HTTP."""

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from groupbuy_async.callbacks import claims

from ..conftest import SECRET, Api, make_tasks, new_id, now_iso, start_client
from ..merchant import LocalMerchant, answering, start_merchant, success_once


async def task_row(pool: asyncpg.Pool, team_id: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT t.*, e.parameter_json FROM notify_task t JOIN event e USING (event_id)"
        " WHERE t.team_id = $1",
        team_id,
    )
    assert row is not None
    return row


async def attempts(pool: asyncpg.Pool, team_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT a.* FROM notify_attempt a JOIN notify_task t ON t.id = a.task_id"
        " WHERE t.team_id = $1 ORDER BY attempt",
        team_id,
    )


async def complete_team(api: Api, act: dict[str, Any], size: int) -> tuple[str, list[str]]:
    outs = [new_id() for _ in range(size)]
    _, env = await api.lock(**act, userId="m0", outTradeNo=outs[0])
    team_id = env["data"]["teamId"]
    for i in range(1, size):
        await api.lock(**act, userId=f"m{i}", teamId=team_id, outTradeNo=outs[i])
    for i, out in enumerate(outs):
        status, env = await api.settle(source=act["source"], channel=act["channel"],
                                       userId=f"m{i}", outTradeNo=out, outTradeTime=now_iso())  # fmt: skip
        assert status == 200, env
    return team_id, outs


async def test_completed_team_is_called_back_at_once_and_signed(
    api: Api, settings: Any, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    client = await start_client(settings)
    try:
        signed_api = await Api.for_client(client)
        act = {**await signed_api.new_activity(target=2), "notifyUrl": merchant.url}
        team_id, outs = await complete_team(signed_api, act, 2)
        await merchant.wait_for(1)
        headers, body = merchant.received[0].headers, merchant.received[0].body
        envelope = Webhook(SECRET).verify(body, headers)  # raises on a bad signature
        assert envelope["type"] == "team.completed"
        payload = envelope["data"]
        assert payload["teamId"] == team_id and payload["outTradeNoList"] == outs
        assert payload["activityId"] == act["activityId"]
        task = await task_row(pool, team_id)
        assert headers["webhook-id"] == payload["eventId"] == str(task["event_id"])
        async with asyncio.timeout(5):
            while (await task_row(pool, team_id))["notify_status"] != 1:
                await asyncio.sleep(0.02)
        task = await task_row(pool, team_id)
        assert (task["notify_count"], task["last_http_status"]) == (1, 200)
        assert [a["http_status"] for a in await attempts(pool, team_id)] == [200]
    finally:
        await client.close()


async def test_settle_returns_before_a_slow_merchant_answers(
    settings: Any, pool: asyncpg.Pool
) -> None:
    merchant = await start_merchant(delay=5)
    client = await start_client(settings)
    try:
        api = await Api.for_client(client)
        act = {**await api.new_activity(target=1), "notifyUrl": merchant.url}
        out = new_id()
        await api.lock(**act, userId="u", outTradeNo=out)
        began = time.monotonic()
        status, env = await api.settle(source="s01", channel="c01", userId="u", outTradeNo=out,
                                       outTradeTime=now_iso())  # fmt: skip
        assert time.monotonic() - began < 1.0
        assert status == 200 and env["data"]["teamCompleted"] is True
        await merchant.wait_for(1)
        async with asyncio.timeout(8):
            while (await task_row(pool, env["data"]["teamId"]))["notify_status"] != 1:
                await asyncio.sleep(0.05)
    finally:
        await client.close()
        await merchant.server.close()


async def test_failing_twice_then_succeeding_takes_three_attempts_with_one_webhook_id(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    async def flaky(n: int) -> web.Response:
        return web.Response(status=500, text="oops") if n <= 2 else web.Response(text="success")

    merchant.answer = flaky
    dispatcher = make_dispatcher(notify_retry_schedule="0s,0s,0s")
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    statuses = []
    for _ in range(3):
        counts = await dispatcher.drain(team_id)
        statuses.append((await task_row(pool, team_id))["notify_status"])
        assert counts.wait_count == 1
    assert statuses == [2, 2, 1]
    assert merchant.requests == 3 and len(merchant.ids) == 1
    logged = await attempts(pool, team_id)
    assert [(a["attempt"], a["http_status"]) for a in logged] == [(1, 500), (2, 500), (3, 200)]
    assert logged[0]["response_body"] == "oops"
    assert (await dispatcher.drain(team_id)).wait_count == 0


async def test_always_failing_ends_in_error_after_the_schedule(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    merchant.mode = "garbage"
    dispatcher = make_dispatcher(notify_retry_schedule="0,0")
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    results = [(await dispatcher.drain(team_id)).as_dict() for _ in range(4)]
    assert [r["retryCount"] for r in results] == [1, 1, 0, 0]
    assert [r["errorCount"] for r in results] == [0, 0, 1, 0]
    task = await task_row(pool, team_id)
    assert (task["notify_status"], task["notify_count"]) == (3, 3)
    assert "success" in task["last_error"]
    assert [a["attempt"] for a in await attempts(pool, team_id)] == [1, 2, 3]


async def test_timeout_is_a_counted_failed_attempt(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    merchant.delay = 3
    dispatcher = make_dispatcher(notify_timeout_seconds=0.3)
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    counts = await dispatcher.drain(team_id)
    assert counts.retry_count == 1
    task = await task_row(pool, team_id)
    assert task["notify_status"] == 2 and task["notify_count"] == 1
    assert "timeout" in task["last_error"] and task["last_http_status"] is None
    delay = task["next_attempt_at"] - datetime.now(UTC)
    assert timedelta(seconds=10) < delay <= timedelta(seconds=18)
    (logged,) = await attempts(pool, team_id)
    assert logged["http_status"] is None and "timeout" in logged["error"]


async def test_connection_refused_is_a_counted_failed_attempt(
    pool: asyncpg.Pool, make_dispatcher: Any
) -> None:
    dispatcher = make_dispatcher()
    (team_id,) = await make_tasks(pool, 1, "http://127.0.0.1:9/nobody-listens")
    assert (await dispatcher.drain(team_id)).retry_count == 1
    task = await task_row(pool, team_id)
    assert task["notify_status"] == 2 and "ClientConnectorError" in task["last_error"]


async def test_gone_stops_at_once(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    merchant.answer = answering(410)
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    assert (await make_dispatcher().drain(team_id)).error_count == 1
    task = await task_row(pool, team_id)
    assert (task["notify_status"], task["last_http_status"]) == (3, 410)


async def test_retry_after_is_honoured(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    merchant.answer = answering(429, headers={"Retry-After": "120"})
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    await make_dispatcher().drain(team_id)
    task = await task_row(pool, team_id)
    delay = task["next_attempt_at"] - datetime.now(UTC)
    assert task["notify_status"] == 2
    assert timedelta(seconds=115) < delay <= timedelta(seconds=120)


async def test_blocked_private_address_is_refused(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    dispatcher = make_dispatcher(notify_block_private=True)
    by_ip, by_name = await make_tasks(pool, 2, merchant.url)
    await pool.execute(
        "UPDATE notify_task SET notify_url = replace(notify_url, '127.0.0.1', 'localhost')"
        " WHERE team_id = $1",
        by_name,
    )
    for team_id in (by_ip, by_name):
        assert (await dispatcher.drain(team_id)).error_count == 1
        task = await task_row(pool, team_id)
        assert task["notify_status"] == 3 and "blocked" in task["last_error"]
    assert merchant.requests == 0


async def test_two_dispatchers_racing_deliver_each_task_exactly_once(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    team_ids = await make_tasks(pool, 1000, merchant.url)
    first = make_dispatcher(notify_concurrency=50, notify_per_host=50, notify_batch_size=100)
    second = make_dispatcher(notify_concurrency=50, notify_per_host=50, notify_batch_size=100)
    await asyncio.gather(first.drain(), second.drain())
    assert merchant.requests == 1000
    assert len(merchant.ids) == 1000 and max(merchant.ids.values()) == 1
    statuses = await pool.fetch(
        "SELECT notify_status, notify_count FROM notify_task WHERE team_id = ANY($1::text[])",
        team_ids,
    )
    assert {(r["notify_status"], r["notify_count"]) for r in statuses} == {(1, 1)}


async def test_abandoned_claim_is_redelivered_and_the_stale_holder_cannot_overwrite(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    # A process claims the task, then "crashes" before sending.
    (stale,) = await claims.claim(pool, 10, timedelta(milliseconds=300), [team_id])
    dispatcher = make_dispatcher()
    assert (await dispatcher.drain(team_id)).wait_count == 0  # leased: not due
    await asyncio.sleep(0.4)
    assert (await dispatcher.drain(team_id)).success_count == 1
    # The stale holder wakes up and reports a failure: it must not land.
    from groupbuy_async.callbacks.rules import AttemptOutcome, NotifyStatus, Verdict

    failure = claims.Result(
        stale, AttemptOutcome(500), Verdict(NotifyStatus.RETRY, datetime.now(UTC), "late"),
        datetime.now(UTC), 1,
    )  # fmt: skip
    assert await claims.record(pool, [failure]) == set()
    task = await task_row(pool, team_id)
    assert (task["notify_status"], task["notify_count"], task["last_error"]) == (1, 1, None)
    assert len(await attempts(pool, team_id)) == 1 and merchant.requests == 1


@pytest.mark.parametrize("late", [False, True], ids=["as-timed", "second-claim-late"])
async def test_per_host_cap_bounds_concurrent_requests(
    pool: asyncpg.Pool, make_dispatcher: Any, monkeypatch: Any, late: bool
) -> None:
    in_flight = peak = 0
    released = calls = 0
    real_claim, real_release = claims.claim, claims.release
    sending = asyncio.Event()

    async def claim(*args: Any, **kwargs: Any) -> list[claims.Task]:
        nonlocal calls
        calls += 1
        if late and calls == 2:
            # Run only once what the first claim took is being sent, as when it waits for
            # a new connection of a cold pool.
            await sending.wait()
        return await real_claim(*args, **kwargs)

    async def counting_release(pool: asyncpg.Pool, tasks: list[Any], due_at: Any) -> None:
        nonlocal released
        released += len(tasks)
        await real_release(pool, tasks, due_at)

    monkeypatch.setattr(claims, "claim", claim)
    monkeypatch.setattr(claims, "release", counting_release)

    async def slow(_: int) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        sending.set()
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.Response(text="success")

    merchant = await start_merchant(answer=slow)
    try:
        team_ids = await make_tasks(pool, 60, merchant.url)
        dispatcher = make_dispatcher(notify_concurrency=100, notify_per_host=4)
        # Two overlapping drains (cron ticks) share the process-wide bounds.
        await asyncio.gather(dispatcher.drain(), dispatcher.drain())
        done = await pool.fetchval(
            "SELECT count(*) FROM notify_task WHERE team_id = ANY($1::text[])"
            " AND notify_status = 1",
            team_ids,
        )
        assert done == 60 and peak == 4
        # The capped backlog is not claimed and given back over and over.
        assert released <= 60, released
    finally:
        await merchant.server.close()


async def delivered(pool: asyncpg.Pool, team_ids: list[str]) -> int:
    return await pool.fetchval(  # type: ignore[no-any-return]
        "SELECT count(*) FROM notify_task WHERE team_id = ANY($1::text[]) AND notify_status = 1",
        team_ids,
    )


def scope_claims(monkeypatch: Any, team_ids: list[str]) -> list[int]:
    """Drains of all due tasks claim only these teams' (so other tests' leftovers cannot
    change who claims what); returns how many rows each claim got, in the order they ran."""
    real_claim = claims.claim
    got: list[int] = []

    async def claim(db: asyncpg.Pool, limit: int, lease: timedelta,
                    teams: list[str] | None = None, **kwargs: Any) -> list[claims.Task]:  # fmt: skip
        tasks = await real_claim(db, limit, lease, teams or team_ids, **kwargs)
        got.append(len(tasks))
        return tasks

    monkeypatch.setattr(claims, "claim", claim)
    return got


async def test_overlapping_drains_stop_only_when_nothing_a_sibling_held_is_left(
    pool: asyncpg.Pool, make_dispatcher: Any, monkeypatch: Any
) -> None:
    # The per-host test's rare failure (8 of 60 delivered), its interleaving forced wherever
    # the drains let it happen: drain A claims the backlog, keeps its host's cap (2 x 4) and
    # gives the rest back; drain B claims that rest, all over the cap, and holds it while A's
    # next claim, once four sends are answered, finds nothing due; only then does B give it
    # back. Neither drain may stop and leave it to the next cron tick.
    claimed = [asyncio.Event() for _ in range(4)]  # claimed[n]: the n-th claim has returned
    given_back = asyncio.Event()  # the first claim's rest is due again
    b_settled = asyncio.Event()  # B holds what it claimed, or stopped without claiming

    merchant = await start_merchant(answer=success_once(b_settled))
    try:
        team_ids = await make_tasks(pool, 60, merchant.url)
        got = scope_claims(monkeypatch, team_ids)
        claim_in_scope, real_release = claims.claim, claims.release
        calls = releases = 0

        async def claim(*args: Any, **kwargs: Any) -> list[claims.Task]:
            nonlocal calls
            calls += 1
            n = calls
            if n == 2:  # B's: after A gave back what was over the cap
                await given_back.wait()
            elif n == 3:  # A's next: while B holds those rows
                await claimed[2].wait()
            try:
                return await claim_in_scope(*args, **kwargs)
            finally:
                if n < len(claimed):
                    claimed[n].set()
                if n == 2:
                    b_settled.set()

        async def release(db: asyncpg.Pool, tasks: list[claims.Task], due_at: Any) -> None:
            nonlocal releases
            n = 0
            if tasks:
                releases += 1
                n = releases
            # B gives its rows back only after A's next claim (B's: A may give some back
            # too, as this fake claim of named teams takes more than a host's room).
            if n >= 2 and asyncio.current_task() is b:
                await claimed[3].wait()
            await real_release(db, tasks, due_at)
            if n == 1:
                given_back.set()

        monkeypatch.setattr(claims, "claim", claim)
        monkeypatch.setattr(claims, "release", release)
        dispatcher = make_dispatcher(notify_concurrency=100, notify_per_host=4)

        async def no_sweep() -> None:  # A's claim must come first: no round trip before it
            return None

        monkeypatch.setattr(dispatcher.delivery, "sweep_health", no_sweep)
        a = asyncio.create_task(dispatcher.drain())
        b = asyncio.create_task(dispatcher.drain())
        b.add_done_callback(lambda _: b_settled.set())
        async with asyncio.timeout(30):
            await asyncio.gather(a, b)
        assert await delivered(pool, team_ids) == 60, f"rows per claim: {got}"
        assert len(merchant.ids) == 60 and max(merchant.ids.values()) == 1
    finally:
        b_settled.set()
        await merchant.server.close()


@pytest.mark.parametrize("one_team", [False, True], ids=["all-due", "one-team"])
async def test_a_drain_delivers_what_it_finds_while_another_drain_fills_its_host(
    pool: asyncpg.Pool, make_dispatcher: Any, monkeypatch: Any, one_team: bool
) -> None:
    # Drain A holds the host's cap (2 x 4: four sends the merchant has not answered yet, four
    # waiting) and has stopped claiming: nothing else was due. Then more falls due and a
    # second drain finds the host at its cap. It may not give those back and stop: A claims
    # no more, so they would wait for the next cron tick.
    answer = asyncio.Event()

    merchant = await start_merchant(answer=success_once(answer))
    try:
        team_ids = await make_tasks(pool, 8, merchant.url)
        got = scope_claims(monkeypatch, team_ids)
        dispatcher = make_dispatcher(notify_concurrency=100, notify_per_host=4)
        first = asyncio.create_task(dispatcher.drain())
        await merchant.wait_for(4)
        async with asyncio.timeout(5):
            while len(got) < 2:  # A's second claim came back empty: it claims no more
                await asyncio.sleep(0.005)
        assert got == [8, 0]
        later = await make_tasks(pool, 1 if one_team else 5, merchant.url)
        team_ids += later  # in the claims' scope too
        second = asyncio.create_task(dispatcher.drain(later[0] if one_team else None))
        async with asyncio.timeout(5):
            while len(got) < 3:
                await asyncio.sleep(0.005)
        assert got[2] == len(later)
        answer.set()
        async with asyncio.timeout(20):
            await first
            counts = await second
        assert counts.success_count == len(later)
        assert await delivered(pool, team_ids) == len(team_ids)
    finally:
        answer.set()
        await merchant.server.close()


async def test_payload_keeps_the_original_fields_one_level_down(
    pool: asyncpg.Pool, api: Api
) -> None:
    act = await api.new_activity(target=1)
    team_id, _outs = await complete_team(api, act, 1)
    task = await task_row(pool, team_id)
    envelope = json.loads(task["parameter_json"])
    assert set(envelope) == {"type", "timestamp", "data"}
    assert (envelope["type"], task["event_type"]) == ("team.completed", "team.completed")
    assert datetime.fromisoformat(envelope["timestamp"]).tzinfo is not None
    assert set(envelope["data"]) == {"teamId", "outTradeNoList", "activityId", "eventId"}


async def test_invalid_notify_url_is_an_error_at_once(
    pool: asyncpg.Pool, make_dispatcher: Any
) -> None:
    (team_id,) = await make_tasks(pool, 1, "gopher://merchant.example/cb")
    assert (await make_dispatcher().drain(team_id)).error_count == 1
    task = await task_row(pool, team_id)
    assert (task["notify_status"], task["notify_count"]) == (3, 1)
    assert "invalid notifyUrl" in task["last_error"]


async def test_immediate_sends_are_batched_bounded_and_finish_on_close(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    dispatcher = make_dispatcher(notify_immediate_limit=4)
    team_ids = await make_tasks(pool, 5, merchant.url)
    fired = [dispatcher.fire(t) for t in team_ids]
    assert fired == [True, True, True, True, False]  # the fifth is left to compensation
    await dispatcher.wait_background(grace_seconds=5)
    rows = await pool.fetch(
        "SELECT team_id, notify_status FROM notify_task WHERE team_id = ANY($1::text[])", team_ids
    )
    statuses = {r["team_id"]: r["notify_status"] for r in rows}
    assert [statuses[t] for t in team_ids] == [1, 1, 1, 1, 0]
    assert merchant.requests == 4
    assert dispatcher.fire(team_ids[4])  # room again once the batch is done
    await dispatcher.close(grace_seconds=5)
    assert (await task_row(pool, team_ids[4]))["notify_status"] == 1
    assert not dispatcher.fire(team_ids[4])  # closed: compensation's turn


async def test_settlements_share_a_claim_only_within_the_immediate_window(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    # Fired together, teams share one claim; 10 ms apart, each has its own. A window long
    # enough to gather the second (20 ms was tried) makes claims of many teams under a busy
    # shop front, and those meet their host's cap and hand the rest to the worker.
    dispatcher = make_dispatcher()
    delivery = dispatcher.immediate.delivery
    claimed: list[list[str]] = []
    claim = delivery.claim

    async def counted(limit: int, team_ids: list[str] | None = None, **kw: Any) -> Any:
        claimed.append(sorted(team_ids or []))
        return await claim(limit, team_ids, **kw)

    delivery.claim = counted
    a, b, c, d = await make_tasks(pool, 4, merchant.url)
    assert dispatcher.fire(a) and dispatcher.fire(b)
    await asyncio.sleep(0.01)
    assert dispatcher.fire(c)
    await asyncio.sleep(0.01)
    assert dispatcher.fire(d)
    await dispatcher.wait_background(grace_seconds=5)
    assert claimed == [sorted([a, b]), [c], [d]]
    assert merchant.requests == 4


async def test_success_body_split_across_chunks_is_read_whole(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    merchant.mode = "chunked"
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    assert (await make_dispatcher().drain(team_id)).success_count == 1


@pytest.mark.parametrize("status", [302, 307])
async def test_redirect_saying_success_is_a_retry_and_is_not_followed(
    pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any, status: int
) -> None:
    async def redirect_once(n: int) -> web.Response:
        # Followed, the redirect would reach this same endpoint (a 307 keeps the POST) and
        # be answered `success`: only an unfollowed redirect leaves the task to retry.
        if n == 1:
            return web.Response(status=status, headers={"Location": merchant.url}, text="success")
        return web.Response(text="success")

    merchant.answer = redirect_once
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    counts = await make_dispatcher().drain(team_id)
    assert (counts.success_count, counts.retry_count) == (0, 1)
    task = await task_row(pool, team_id)
    assert (task["notify_status"], task["notify_count"]) == (2, 1)
    assert task["last_http_status"] == status and task["last_error"] == f"HTTP {status}"
    assert task["next_attempt_at"] > datetime.now(UTC)
    (logged,) = await attempts(pool, team_id)
    assert (logged["http_status"], logged["response_body"]) == (status, "success")
    assert merchant.requests == 1


async def test_replay_restarts_the_retry_schedule_and_attempt_numbers_go_on(
    api: Api, pool: asyncpg.Pool, merchant: LocalMerchant, make_dispatcher: Any
) -> None:
    merchant.mode = "garbage"
    # The first delay stands out: a retry scheduled with it is told apart from the others.
    dispatcher = make_dispatcher(notify_retry_schedule="10m,0s,0s")
    (team_id,) = await make_tasks(pool, 1, merchant.url)

    async def attempt_once() -> tuple[int, timedelta | None]:
        """One drain, which must make exactly one attempt; the status and delay it left."""
        assert (await dispatcher.drain(team_id)).wait_count == 1
        task = await task_row(pool, team_id)
        if task["notify_status"] != 2:
            return task["notify_status"], None
        return 2, task["next_attempt_at"] - datetime.now(UTC)

    async def run_schedule() -> None:
        status, delay = await attempt_once()
        assert status == 2 and delay is not None
        assert timedelta(minutes=7) < delay <= timedelta(minutes=12)  # 10m, ±20 % jitter
        assert (await dispatcher.drain(team_id)).wait_count == 0  # not due before then
        await pool.execute(
            "UPDATE notify_task SET next_attempt_at = now() WHERE team_id = $1", team_id
        )
        for _ in range(2):
            status, delay = await attempt_once()
            assert status == 2 and delay is not None and delay <= timedelta(seconds=1)
        assert await attempt_once() == (3, None)  # len(schedule) + 1 attempts, then error
        assert (await dispatcher.drain(team_id)).wait_count == 0

    await run_schedule()
    status, env = await api.call("POST", f"/api/v1/admin/notify_tasks/{team_id}/replay", admin=True)
    assert status == 200 and env["data"]["notifyStatus"] == 2, env
    assert env["data"]["notifyCount"] == 4
    await run_schedule()  # the same schedule again, from its first delay

    task = await task_row(pool, team_id)
    assert (task["notify_status"], task["notify_count"]) == (3, 8)
    assert [a["attempt"] for a in await attempts(pool, team_id)] == list(range(1, 9))
    assert merchant.requests == 8 and len(merchant.ids) == 1


async def test_a_database_outage_in_the_immediate_path_is_one_log_line(
    pool: asyncpg.Pool, make_dispatcher: Any, monkeypatch: Any, caplog: Any
) -> None:
    async def down(*args: Any, **kwargs: Any) -> Any:
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    monkeypatch.setattr(claims, "claim", down)
    dispatcher = make_dispatcher()
    with caplog.at_level(logging.WARNING, logger="groupbuy_async.callbacks.immediate"):
        assert dispatcher.fire("12345678")
        await dispatcher.wait_background(grace_seconds=5)
    (record,) = [r for r in caplog.records if "immediate callbacks" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "ConnectionDoesNotExistError" in record.getMessage()
