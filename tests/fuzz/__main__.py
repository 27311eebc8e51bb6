"""API fuzz: `make fuzz` / `python -m tests.fuzz [--max-examples N] [--seed N]`.

Starts a real API process (`python -m groupbuy_async api`) on a fresh database of the test
PostgreSQL (GROUPBUY_TEST_DATABASE_URL, else an embedded one under .data/fuzz/), stores a small
catalog and one completed, refunded order through the API, then runs schemathesis over every
operation of the server's own /openapi.json: positive and negative data (coverage and fuzzing
phases), every check schemathesis has (no 5xx; status codes, content types, headers and bodies
as documented; schema-valid input accepted, schema-invalid input refused; auth enforced).
tests/fuzz/hooks.py says what its hooks change and why. Prints schemathesis' report, the API's
ERROR log lines, and a last line `fuzz: N requests, M failures, K ERROR log lines`; exit status
1 on any failure. The API's log of the last run is .data/fuzz/api.log.
"""

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from groupbuy_async.dev.databases import temporary_database
from groupbuy_async.dev.embedded import servers_or_embedded
from groupbuy_async.dev.host import free_port

from ..conftest import wait_ready

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".data" / "fuzz"
TOKEN = f"fuzz-{uuid.uuid4().hex}"
METRICS_TOKEN = "fuzz-metrics-token"
SECRETS_KEY = "rA-FQVO3wigthyj2RDALcqgn3CmUErYPfktyHBrXbl0="  # seals the endpoints' secrets
SINK = "http://127.0.0.1:9"  # discard: nothing listens, a callback attempt fails at once
BIN = Path(sys.executable).parent


@contextmanager
def _api(database_url: str, redis_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_")}
    env.update(
        GROUPBUY_DATABASE_URL=database_url,
        GROUPBUY_REDIS_URL=redis_url,
        GROUPBUY_ADMIN_TOKEN=TOKEN,
        GROUPBUY_METRICS_TOKEN=METRICS_TOKEN,
        GROUPBUY_SECRETS_KEY=SECRETS_KEY,
        GROUPBUY_PORT=str(port),
        # The hooks point every accepted notifyUrl at the loopback sink.
        GROUPBUY_NOTIFY_BLOCK_PRIVATE="false",
        GROUPBUY_LOG_LEVEL="WARNING",
    )
    with (DATA / "api.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "groupbuy_async", "api"], env=env, stdout=log, stderr=log
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def seed(base: str) -> dict[str, Any]:
    """What positive cases may name (hooks.py): a discount, a SKU bound to an effective
    activity (teams of 1), and an order locked, paid (completing its team) and refunded."""
    tag = uuid.uuid4().hex[:8]
    goods = {"source": "s01", "channel": "c01", "goodsId": f"fuzz-goods-{tag}"}
    activity_id = 900_000_000 + int(tag, 16) % 1_000_000
    order = {**{k: goods[k] for k in ("source", "channel")}, "userId": "fuzz-user"}
    order["outTradeNo"] = f"fuzz-order-{tag}"
    now = datetime.now(UTC)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(base) as http:
        key = ""

        async def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
            shop = path.startswith("/api/v1/gbm/")
            headers = {"Authorization": f"Bearer {key}"} if shop else admin
            async with http.request(method, path, json=body, headers=headers) as resp:
                answer = await resp.json()
                assert resp.status == 200, (path, answer)
                return answer["data"]

        await call("PUT", "/api/v1/admin/merchants/fuzz",
                   {"name": "fuzz", "bindings": [{"source": "s01", "channel": "c01"}]})  # fmt: skip
        key = (await call("POST", "/api/v1/admin/merchants/fuzz/keys"))["key"]
        # The fuzz merchant's endpoint at the sink: the url every lock's notifyUrl is set to.
        await call("PUT", "/api/v1/admin/merchants/fuzz/endpoints/sink", {"url": f"{SINK}/notify"})
        # What its own routes name (the sink one stays as it is: every lock names it).
        await call("PUT", "/api/v1/admin/merchants/fuzz/endpoints/spare", {"url": f"{SINK}/spare"})
        await call("PUT", "/api/v1/admin/merchants/fuzz-other", {"name": "another"})
        other_key = await call("POST", "/api/v1/admin/merchants/fuzz-other/keys")
        await call("PUT", "/api/v1/admin/merchants/fuzz-other/endpoints/other",
                   {"url": f"{SINK}/other"})  # fmt: skip

        discount_id = f"fuzz-discount-{tag}"
        await call("PUT", f"/api/v1/admin/discounts/{discount_id}",
                   {"discountName": "fuzz", "marketPlan": "ZJ", "marketExpr": "1"})  # fmt: skip
        await call("PUT", f"/api/v1/admin/skus/{goods['goodsId']}",
                   {"goodsName": "fuzz", "originalPrice": 100, "source": "s01",
                    "channel": "c01"})  # fmt: skip
        await call("PUT", f"/api/v1/admin/activities/{activity_id}", {
            "activityName": "fuzz", "discountId": discount_id, "status": 1, "target": 1,
            "takeLimitCount": 100_000, "startTime": (now - timedelta(days=1)).isoformat(),
            "endTime": (now + timedelta(days=30)).isoformat(), "goods": [goods],
        })  # fmt: skip
        lock = {**order, "activityId": activity_id, "goodsId": goods["goodsId"]}
        locked = await call("POST", "/api/v1/gbm/trade/lock_market_pay_order",
                            {**lock, "notifyUrl": f"{SINK}/notify"})  # fmt: skip
        await call("POST", "/api/v1/gbm/trade/settlement_market_pay_order",
                   {**order, "outTradeTime": datetime.now(UTC).isoformat()})  # fmt: skip
        await call("POST", "/api/v1/gbm/trade/refund_market_pay_order", order)
        events = await call("GET", f"/api/v1/admin/events?teamId={locked['teamId']}")
        delivery = (await call("GET", "/api/v1/gbm/deliveries?limit=1"))["items"][0]
    return {
        "sink": SINK,
        "discountId": discount_id,
        "activityId": activity_id,
        "goods": goods,
        "order": {**order, "teamId": locked["teamId"]},
        "eventId": events["items"][0]["eventId"],
        "merchantKey": key,
        "merchantId": "fuzz",
        "otherMerchantId": "fuzz-other",
        "otherKeyId": other_key["keyId"],
        "endpointId": "sink",
        "spareEndpointId": "spare",
        "otherEndpointId": "other",
        "deliveryId": delivery["deliveryId"],
    }


def _schemathesis(base: str, seeds: dict[str, Any], args: argparse.Namespace) -> int:
    report = DATA / "report.ndjson"
    # Each operation gets the credential of its security scheme (the OpenAPI document's
    # securitySchemes), as a real client sends it; schemathesis' own checks of missing and
    # wrong credentials still run against each.
    config = DATA / "schemathesis.toml"
    config.write_text(
        f'[auth.openapi.adminToken]\nbearer = "{TOKEN}"\n'
        f'[auth.openapi.merchantKey]\nbearer = "{seeds["merchantKey"]}"\n'
        f'[auth.openapi.metricsToken]\nbearer = "{METRICS_TOKEN}"\n'
    )
    command = [
        str(BIN / "schemathesis"), "--config-file", str(config), "run", f"{base}/openapi.json",
        "--phases", "coverage,fuzzing", "--mode", "all", "--workers", "1",
        "--max-examples", str(args.max_examples), "--seed", str(args.seed),
        "--report", "ndjson", "--report-ndjson-path", str(report),
        "--output-truncate", "true", "--no-color",
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks"}
    env["GROUPBUY_FUZZ_SEED"] = json.dumps(seeds)
    result = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    print(result.stdout, flush=True)
    requests, failures = _counts(result.stdout)
    errors = [line for line in (DATA / "api.log").read_text().splitlines() if " ERROR " in line]
    for line in errors[:10]:  # a 5xx is a failure above; these are what the API logged
        print(f"api.log: {line[:200]}")
    print(f"fuzz: {requests} requests, {failures} failures, {len(errors)} ERROR log lines"
          f" (seed {args.seed})")  # fmt: skip
    return result.returncode


def _counts(summary: str) -> tuple[str, str]:
    """What schemathesis' summary says it sent and found."""
    sent = re.findall(r"(\d+) (?:generated|test cases)", summary)
    found = re.search(r"(\d+) (?:unique )?failures?", summary)
    return (sent[-1] if sent else "?"), (found.group(1) if found else "0")


async def _run(database_url: str, redis_url: str, args: argparse.Namespace) -> int:
    async with temporary_database(database_url, "groupbuy_fuzz") as url:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with _api(url, redis_url, port) as proc:
            async with aiohttp.ClientSession() as http:
                await wait_ready(http, base, proc, seconds=60)
            seeds = await seed(base)
            return await asyncio.to_thread(_schemathesis, base, seeds, args)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=20260101, help="schemathesis' random seed")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    with servers_or_embedded(
        os.environ.get("GROUPBUY_TEST_DATABASE_URL"),
        os.environ.get("GROUPBUY_TEST_REDIS_URL"),
        DATA,
    ) as (database_url, redis_url):
        return asyncio.run(_run(database_url, redis_url, args))


if __name__ == "__main__":
    sys.exit(main())
