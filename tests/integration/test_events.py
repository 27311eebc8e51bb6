"""Typed events in the one outbox: exactly once per state change, bodies in one envelope."""

import json
import uuid
from typing import Any

import asyncpg
import pytest

from groupbuy_async.callbacks import outbox
from groupbuy_async.callbacks.events import Event, EventType

from ..conftest import make_tasks
from ..merchant import LocalMerchant


async def _team(pool: asyncpg.Pool) -> str:
    (team_id,) = await make_tasks(pool, 1, "http://127.0.0.1:9/cb")
    return team_id


def _event(kind: EventType, team_id: str, order_id: str | None = None) -> Event:
    return Event(kind, team_id, 1, "http://127.0.0.1:9/cb", {"teamId": team_id}, order_id)


async def test_each_event_is_written_once_per_state_change(pool: asyncpg.Pool) -> None:
    team_id = await _team(pool)  # already has its team.completed event
    order = f"o{uuid.uuid4().hex[:10]}"
    async with pool.acquire() as conn, conn.transaction():
        first = await outbox.enqueue(conn, [
            _event(EventType.TEAM_COMPLETED, team_id),  # a second one for the team: no-op
            _event(EventType.TEAM_FAILED, team_id),
            _event(EventType.ORDER_CLOSED, team_id, order),
            _event(EventType.ORDER_REFUNDED, team_id, order),
        ])  # fmt: skip
        again = await outbox.enqueue(conn, [
            _event(EventType.TEAM_FAILED, team_id),
            _event(EventType.ORDER_CLOSED, team_id, order),
        ])  # fmt: skip
    assert len(first) == 3 and again == []
    rows = await pool.fetch(
        "SELECT event_type, order_id, event_id, parameter_json FROM event"
        " WHERE team_id = $1 ORDER BY id",
        team_id,
    )
    assert [r["event_type"] for r in rows] == [
        "team.completed", "team.failed", "order.closed", "order.refunded",
    ]  # fmt: skip
    for row in rows[1:]:
        body = json.loads(row["parameter_json"])
        assert body["type"] == row["event_type"]
        assert body["data"]["eventId"] == str(row["event_id"])
        assert set(body) == {"type", "timestamp", "data"}


async def test_events_roll_back_with_the_state_change(pool: asyncpg.Pool) -> None:
    team_id = await _team(pool)
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, [_event(EventType.TEAM_FAILED, team_id)])
            raise RuntimeError("the state change failed")
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM event WHERE team_id = $1 AND event_type = 'team.failed'",
            team_id,
        )
        == 0
    )


def test_order_events_need_an_order_and_team_events_none() -> None:
    with pytest.raises(ValueError):
        _event(EventType.ORDER_CLOSED, "1")
    with pytest.raises(ValueError):
        _event(EventType.TEAM_FAILED, "1", "o1")


async def test_the_database_refuses_an_order_event_without_its_order(pool: asyncpg.Pool) -> None:
    team_id = await _team(pool)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO event (event_id, event_type, activity_id, team_id, parameter_json)"
            " VALUES (gen_random_uuid(), 'order.closed', 1, $1, '{}')",
            team_id,
        )


async def test_a_fired_team_sends_its_completion_and_a_team_run_sends_all_its_events(
    pool: asyncpg.Pool, make_dispatcher: Any, merchant: LocalMerchant
) -> None:
    """The immediate path after a settlement sends the team.completed event, not another
    event of the team that happens to be due earlier; an operator's one-team run sends
    every due event of the team."""
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    order = f"o{uuid.uuid4().hex[:10]}"
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, [
            Event(EventType.ORDER_CLOSED, team_id, 1, merchant.url, {"teamId": team_id}, order),
        ])  # fmt: skip
        # The order event is due before the completion.
        await conn.execute(
            "UPDATE notify_task SET next_attempt_at = now() - interval '1 minute'"
            " WHERE team_id = $1 AND event_type = 'order.closed'",
            team_id,
        )
    dispatcher = make_dispatcher()
    assert dispatcher.fire(team_id)
    await dispatcher.wait_background(grace_seconds=5)

    def sent() -> list[str]:  # make_tasks writes the completion in the old flat form
        return [json.loads(r.body).get("type", "team.completed") for r in merchant.received]

    assert sent() == ["team.completed"]
    counts = await dispatcher.drain(team_id)
    assert counts.success_count == 1
    assert sent() == ["team.completed", "order.closed"]
