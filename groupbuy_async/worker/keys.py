"""The workers' Redis: its client, and the keys each worker keeps there, under
GROUPBUY_QUEUE_NAME:

  {queue}:jobs:{worker}   its arq queue (its cron ticks)
  {queue}:alive:{worker}  its heartbeat, rewritten every HEARTBEAT_SECONDS with a TTL just
                          longer, deleted when it closes: what `health worker` reads

where {worker} is host:pid:random. Each worker process has a queue of its own, so each runs
every cron tick. Deployments sharing a Redis database need distinct queue names, or `health
worker` would see each other's workers.
"""

import os
import socket
import uuid

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

HEARTBEAT_SECONDS = 15
# Any Redis command of the worker's (polls, heartbeat, cron enqueues, results) is quick: one
# that takes longer means Redis is paused or cut off, and the worker must not hang on it.
REDIS_TIMEOUT_SECONDS = 5.0


async def connect_redis(url: str) -> ArqRedis:
    """arq's Redis client, pinged once: no retries (an unreachable server is one error now,
    not a warning a second for five seconds), and a time limit on every command (a server
    that stops answering is an error, not a worker idling forever)."""
    redis: ArqRedis = ArqRedis.from_url(
        url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        await redis.ping()
    except BaseException:
        await redis.aclose()
        raise
    return redis


def new_worker_id() -> str:
    """host:pid:random: unique, and says where the worker runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def queue_key(queue_name: str, worker_id: str) -> str:
    return f"{queue_name}:jobs:{worker_id}"


def alive_key(queue_name: str, worker_id: str) -> str:
    return f"{queue_name}:alive:{worker_id}"


def key_pattern(queue_name: str, kind: str) -> str:
    """SCAN MATCH pattern of every `kind` key ("jobs", "alive") under `queue_name`, which
    is taken literally."""
    literal = "".join("\\" + c if c in "*?[]\\" else c for c in queue_name)
    return f"{literal}:{kind}:*"


def key_worker(queue_name: str, kind: str, key: str) -> str:
    """The worker id in a `kind` key."""
    return key.removeprefix(f"{queue_name}:{kind}:")


def worker_host(worker_id: str) -> str:
    return worker_id.rsplit(":", 2)[0]


async def forget_queue(redis: ArqRedis, queue: str) -> None:
    """Delete a worker's queue and its jobs' keys (job, retry, in progress): it holds only
    that worker's own next ticks, which no other worker would run."""
    ids = [raw.decode() for raw in await redis.zrange(queue, 0, -1)]
    prefixes = (job_key_prefix, retry_key_prefix, in_progress_key_prefix)
    await redis.delete(queue, *(prefix + job_id for job_id in ids for prefix in prefixes))


async def forget_dead_workers(redis: ArqRedis, queue_name: str) -> None:
    """Forget the queues of workers whose heartbeat has lapsed (killed without closing)."""
    async for raw in redis.scan_iter(match=key_pattern(queue_name, "jobs"), count=1000):
        key = raw.decode()
        if not await redis.exists(alive_key(queue_name, key_worker(queue_name, "jobs", key))):
            await forget_queue(redis, key)
