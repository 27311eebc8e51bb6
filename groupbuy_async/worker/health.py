"""`health worker`: this host's workers have their heartbeats in Redis, and their last drain
and expiry sweep are not stale."""

import json
import logging
import socket
import time
from typing import Any

from ..process.reasons import unreachable
from ..process.startup import UNREACHABLE
from .keys import connect_redis, key_pattern, key_worker, worker_host
from .liveness import stale

log = logging.getLogger("groupbuy_async")


async def check_workers(redis_url: str, queue_name: str) -> int:
    """0 when healthy: this host's workers (those of GROUPBUY_QUEUE_NAME) have their
    heartbeats in Redis (written every HEARTBEAT_SECONDS while a worker's loop runs, deleted
    when it closes) and their last drain and expiry sweep are not stale. 1, with one line
    saying why, otherwise. Only this host's: a health check runs where its worker does (a
    container, a pod), and there may be other workers elsewhere, healthy or not, that are not
    its own."""
    host = socket.gethostname()
    try:
        redis = await connect_redis(redis_url)
        try:
            keys = [k.decode() async for k in redis.scan_iter(key_pattern(queue_name, "alive"))]
            ids = [key_worker(queue_name, "alive", k) for k in keys]
            mine = {i: k for i, k in zip(ids, keys, strict=True) if worker_host(i) == host}
            beats = await redis.mget(list(mine.values())) if mine else []
        finally:
            await redis.aclose()
    except UNREACHABLE as exc:
        log.warning("worker health check failed: %s", unreachable("Redis", redis_url, exc))
        return 1
    now = time.time()
    problems = [
        f"worker {worker_id}: {problem}"
        for worker_id, beat in zip(mine, beats, strict=True)
        if beat  # gone since the scan: closed just now
        for problem in stale(_record(beat), now)
    ]
    if not any(beats):
        log.warning(
            "worker health check failed: no heartbeat in Redis from a worker on %s"
            " (GROUPBUY_QUEUE_NAME %s)",
            host,
            queue_name,
        )
        return 1
    if problems:
        log.warning("worker health check failed: %s", "; ".join(problems))
        return 1
    return 0


def _record(beat: bytes) -> dict[str, Any]:
    """A heartbeat's record; empty (nothing to judge) for one that is not JSON."""
    try:
        record = json.loads(beat)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
