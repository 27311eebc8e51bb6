"""The arq worker on real Redis: its cron marks forming teams past their window as failed."""

import uuid
from typing import Any

import asyncpg

from groupbuy_async.settings import Settings
from groupbuy_async.worker import build_worker, every

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
