"""The arq worker on real Redis: its cron marks forming teams past their window as failed."""

import uuid
from typing import Any

import asyncpg

from groupbuy_async.settings import Settings
from groupbuy_async.worker.arq_worker import build_worker
from groupbuy_async.worker.jobs import every

from ..conftest import Api, new_id


async def test_worker_marks_expired_forming_teams_failed(
    api: Api, pool: asyncpg.Pool, settings: Settings
) -> None:
    act = await api.new_activity()
    teams: dict[str, Any] = {}
    for name in ("expired", "open", "complete"):
        _, env = await api.lock(**act, userId=f"u-{name}", outTradeNo=new_id())
        teams[name] = env["data"]["teamId"]
    await pool.execute(
        "UPDATE group_buy_order SET valid_end_time = now() - interval '1 second'"
        " WHERE team_id = ANY($1::text[])",
        [teams["expired"], teams["complete"]],
    )
    await pool.execute(
        "UPDATE group_buy_order SET status = 1, complete_count = target_count,"
        " lock_count = target_count WHERE team_id = $1",
        teams["complete"],
    )
    worker = build_worker(settings, burst=True, queue_name=f"test:{uuid.uuid4().hex}")
    try:
        await worker.main()
    finally:
        await worker.close()
    assert (await api.team(teams["expired"]))["status"] == 2
    assert (await api.team(teams["open"]))["status"] == 0
    assert (await api.team(teams["complete"]))["status"] == 1


def test_cron_period_maps_to_seconds_of_the_minute() -> None:
    assert every(15) == {0, 15, 30, 45}
    assert every(7) == set(range(0, 60, 10))
    assert every(120) == {0}


async def test_health_worker_checks_the_workers_on_its_own_host(settings: Settings) -> None:
    """Heartbeats of workers elsewhere (another container, pod) do not make this host's
    worker healthy; a queue name of its own is another deployment."""
    import socket

    from groupbuy_async.worker.health import check_workers
    from groupbuy_async.worker.keys import alive_key, connect_redis

    queue = f"test:{uuid.uuid4().hex}[*]"  # glob characters are taken literally
    assert settings.redis_url
    keys = [
        alive_key(queue, "elsewhere.example:7:abcd1234"),
        alive_key(queue + "x", f"{socket.gethostname()}:7:abcd1234"),
        alive_key(queue, f"{socket.gethostname()}:8:abcd1234"),
    ]
    redis = await connect_redis(settings.redis_url)
    try:
        for key in keys[:2]:
            await redis.set(key, b"up", ex=30)
        assert await check_workers(settings.redis_url, queue) == 1
        await redis.set(keys[2], b"up", ex=30)
        assert await check_workers(settings.redis_url, queue) == 0
    finally:
        await redis.delete(*keys)
        await redis.aclose()


async def test_queues_of_workers_gone_without_closing_are_deleted(settings: Settings) -> None:
    from groupbuy_async.worker.keys import (
        alive_key,
        connect_redis,
        forget_dead_workers,
        queue_key,
    )

    queue = f"test:{uuid.uuid4().hex}"
    assert settings.redis_url
    redis = await connect_redis(settings.redis_url)
    try:
        await redis.zadd(queue_key(queue, "h:1:dead"), {"tick": 1})
        await redis.zadd(queue_key(queue, "h:2:live"), {"tick": 1})
        await redis.set(alive_key(queue, "h:2:live"), b"up", ex=30)
        await forget_dead_workers(redis, queue)
        assert not await redis.exists(queue_key(queue, "h:1:dead"))
        assert await redis.exists(queue_key(queue, "h:2:live"))
    finally:
        await redis.delete(queue_key(queue, "h:2:live"), alive_key(queue, "h:2:live"))
        await redis.aclose()


async def test_drains_beyond_max_drains_skip_their_tick(
    settings: Settings, pool: asyncpg.Pool, merchant: Any
) -> None:
    """A long backlog keeps each drain busy for DRAIN_SECONDS; past MAX_DRAINS of them a
    tick is skipped (not counted as a drain), so team expiry always finds an arq job slot."""
    from groupbuy_async.worker.context import shutdown, startup
    from groupbuy_async.worker.jobs import MAX_DRAINS, MAX_JOBS, deliver_callbacks

    from ..conftest import make_tasks

    assert MAX_DRAINS < MAX_JOBS
    ctx: dict[str, Any] = {"settings": settings}
    await startup(ctx)
    try:
        await make_tasks(pool, 1, merchant.url)
        liveness = ctx["liveness"]
        before = liveness.last_drain
        liveness.drains = MAX_DRAINS
        assert await deliver_callbacks(ctx) is None
        assert liveness.last_drain == before and not merchant.requests
        liveness.drains = MAX_DRAINS - 1
        counts = await deliver_callbacks(ctx)
        assert counts is not None and counts["successCount"] >= 1
        assert liveness.last_drain > before and liveness.drains == MAX_DRAINS - 1
    finally:
        await shutdown(ctx)


async def test_a_stop_arq_ordered_ends_the_loop_even_if_its_cancellation_was_lost(
    settings: Settings,
) -> None:
    """arq stops its loop by cancelling it once, then calls on_stop; should that cancellation
    be swallowed on its way, the next turn of the loop ends it all the same."""
    import asyncio
    import signal

    import pytest

    from groupbuy_async.worker.keys import connect_redis

    assert settings.redis_url
    redis = await connect_redis(settings.redis_url)
    queue = f"test:{uuid.uuid4().hex}"
    worker = build_worker(settings, redis_pool=redis, queue_name=queue)
    try:
        await worker.heart_beat()  # a turn of the loop, as usual
        assert worker.on_stop is not None
        worker.on_stop(signal.SIGTERM)
        with pytest.raises(asyncio.CancelledError):
            await worker.heart_beat()
    finally:
        await redis.delete(queue, worker.health_check_key)
        await redis.aclose()
