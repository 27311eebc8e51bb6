"""What a worker leaves in Redis once it stopped cleanly: nothing. Not its queue or heartbeat,
nor arq's job, retry and in-progress keys of the cron ticks it ran or had queued."""

from groupbuy_async.db import create_pool
from groupbuy_async.dev.databases import temporary_database
from groupbuy_async.dev.embedded import EmbeddedServer
from groupbuy_async.settings import Settings

from ..conftest import keys_left, make_tasks
from ..merchant import LocalMerchant
from .test_worker_processes import NOISE, WorkerProcess, worker_env


async def test_a_worker_stopped_while_a_drain_sends_leaves_no_key_in_redis(
    settings: Settings,
    server_urls: tuple[str, str],
    merchant: LocalMerchant,
    own_redis: EmbeddedServer,
) -> None:
    """SIGTERM while a send is in flight: the worker waits for it over several ticks of its
    every-second crons (arq queues each tick ahead of its time), then exits 0."""
    async with temporary_database(server_urls[0], "groupbuy_test_keys") as url:
        pool = await create_pool(url, 1, 2)
        try:
            merchant.delay = 3.0
            await make_tasks(pool, 1, merchant.url)
        finally:
            await pool.close()
        env = worker_env(
            settings.model_copy(update={"database_url": url, "redis_url": own_redis.url}),
            FAIL_TEAMS_CRON_SECONDS=1, CLOSE_UNPAID_CRON_SECONDS=1, NOTIFY_CRON_SECONDS=1,
        )  # fmt: skip
        worker = await WorkerProcess.start(env)
        try:
            await merchant.wait_for(1, seconds=20)
            code, _ = await worker.terminate()
        finally:
            await worker.kill()
    assert code == 0, worker.log[-3000:]
    assert not any(noise in worker.log for noise in NOISE), worker.log[-3000:]
    assert await keys_left(own_redis.url) == {}
