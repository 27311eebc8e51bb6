"""schemathesis hooks of `make fuzz` (loaded with SCHEMATHESIS_HOOKS=tests.fuzz.hooks).

What they change, and why each is no hole in the check:
- Every accepted endpoint url is sent to the local sink (same path, query and fragment): an
  accepted URL is called back, and a fuzzer's hosts are on the internet; a lock's accepted
  notifyUrl becomes the url of the fuzz merchant's endpoint at the sink (a lock may name only
  its merchant's endpoints). Only URLs the pattern accepts are rewritten, into another URL it
  accepts, so no case changes its validity.
- Positive cases name what is stored (runner: seed()) where a schema-valid request depends on
  it: a config body names the seeded discount (and no goods: a goods item binds to one
  activity), an `after` cursor a stored event; half of the locks go to the seeded activity
  with a new outTradeNo, half of the settlements, refunds and reads name an order, team or
  event that exists, a payment with the time of now (a payment cannot predate its lock).
  Generated names are otherwise unknown, and their documented 404 teaches nothing; pinned,
  the success answers are checked against the response schemas. A PUT that names a seed
  (schemathesis reuses ids it has seen) stores a new one instead, so the seeds stay.
- The rules of schema-valid input that JSON Schema cannot state (the descriptions do): an
  activity's endTime is after its startTime; a merchant's bindings name each pair once (the
  schema's uniqueItems compares whole objects, with properties the server ignores); an
  endpoint's secret is given only when it is created, and its channels are pairs its merchant
  holds (state the schema cannot know: a refusal saying so is excused, only then). Positive cases that have them the other
  way round get them swapped; a refusal of equal ones is excused (filter_failure), and only
  when the case has them equal.
Negative cases are left as generated (but for the notifyUrl above).
"""

import itertools
import json
import os
import re
import threading
import zlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import schemathesis
from schemathesis import Case, HookContext, Response
from schemathesis.core.failures import Failure

from groupbuy_async.http.wire import URL_PATTERN

SEED: dict[str, Any] = json.loads(os.environ.get("GROUPBUY_FUZZ_SEED", "{}"))
_URL = re.compile(URL_PATTERN)
_lock = threading.Lock()
# Orders the fuzzer locked (source, channel, userId, outTradeNo, teamId): half of them are
# kept for one settlement each (refunds, which run first, would close them all), the rest are
# named by refunds, pulls and team reads.
_orders: list[dict[str, str]] = []
_to_settle: list[dict[str, str]] = []
_locks = itertools.count(1)


def _half(*parts: Any) -> bool:
    """A fair coin that gives the same side for the same case, run after run."""
    return zlib.crc32(json.dumps(parts, sort_keys=True, default=str).encode()) % 2 == 0


def _sink(url: str) -> str:
    rest = url[len(urlsplit(url).scheme) + 3 :].partition("/")[2]
    return f"{SEED['sink']}/{rest}"


def _order(case: "Case[Any]", to_settle: bool = False) -> dict[str, str]:
    """An order the fuzzer locked; for a settlement, one kept for it while there is one."""
    with _lock:
        if to_settle and _to_settle:
            return _to_settle.pop()
        orders = list(_orders) or [SEED["order"]]
    return orders[zlib.crc32(repr(case.body).encode()) % len(orders)]


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _pin_body(key: str, body: dict[str, Any], case: "Case[Any]") -> None:
    if key == "PUT /api/v1/admin/activities/{activityId}":
        # Bound goods are the seed's, and each binds to one activity: none.
        body.update(discountId=SEED["discountId"], goods=[])
        start, end = _time(body.get("startTime")), _time(body.get("endTime"))
        if start is not None and end is not None and end < start:
            body["startTime"], body["endTime"] = body["endTime"], body["startTime"]
    elif key == "POST /api/v1/gbm/trade/lock_market_pay_order" and _half(body):
        # A new order each time (generated outTradeNos repeat, and a repeat is a replay).
        fresh = f"fz{next(_locks)}-{body.get('outTradeNo', '')}"[:64]
        body.update(SEED["goods"], activityId=SEED["activityId"], outTradeNo=fresh)
        body.pop("teamId", None)
    elif key == "POST /api/v1/gbm/index/query_group_buy_market_config" and _half(body):
        body.update(SEED["goods"])
    elif key.startswith("POST /api/v1/gbm/trade/") and _half(body):  # settle, refund
        order = _order(case, to_settle="outTradeTime" in body)
        body.update({k: order[k] for k in ("source", "channel", "userId", "outTradeNo")})
        if "outTradeTime" in body:
            body["outTradeTime"] = datetime.now(UTC).isoformat()


def _pin_path(case: "Case[Any]") -> None:
    """Half of the reads, deletes and replays name what exists. A PUT replaces what it names:
    one that names the seeds (schemathesis reuses ids it has seen) stores a new one instead."""
    params = case.path_parameters
    if not params:
        return
    if params.get("endpointId") == SEED["endpointId"]:  # every lock names it: left as it is
        params["endpointId"] = SEED["spareEndpointId"]
    if case.method.upper() == "PUT":
        seeded = {str(SEED[k]) for k in ("discountId", "activityId", "merchantId")}
        seeded |= {SEED["goods"]["goodsId"], SEED["otherMerchantId"], SEED["endpointId"]}
        seeded.add(SEED["otherEndpointId"])
        for name, value in params.items():
            if str(value) in seeded:
                params[name] = 1 if name == "activityId" else f"not-{value}"
        return
    if not _half(params):
        return
    order = _order(case)
    seeds = {
        "discountId": SEED["discountId"],
        "goodsId": SEED["goods"]["goodsId"],
        "activityId": SEED["activityId"],
        "eventId": SEED["eventId"],
        "teamId": order["teamId"],
        "outTradeNo": order["outTradeNo"],
        # The merchant whose key trades stays as it is: reads and key changes name another.
        "merchantId": SEED["otherMerchantId"],
        "keyId": SEED["otherKeyId"],
        # The merchant's own routes name its spare endpoint; the operator's another's.
        "endpointId": SEED["otherEndpointId" if "merchantId" in params else "spareEndpointId"],
        "deliveryId": SEED["deliveryId"],
    }
    for name in params:
        params[name] = seeds[name]
    if "outTradeNo" in params and case.query is not None:
        case.query.update({k: order[k] for k in ("source", "channel", "userId")})


@schemathesis.hook
def before_call(context: HookContext, case: "Case[Any]", kwargs: dict[str, Any]) -> None:
    body = case.body
    if isinstance(body, dict):
        url = body.get("notifyUrl")
        if isinstance(url, str) and _URL.fullmatch(url):
            body["notifyUrl"] = f"{SEED['sink']}/notify"  # the fuzz merchant's endpoint
        url = body.get("url")
        if isinstance(url, str) and _URL.fullmatch(url):
            body["url"] = _sink(url)
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    key = f"{case.method.upper()} {case.operation.path}"
    if isinstance(body, dict):
        _pin_body(key, body, case)
    if key == "GET /api/v1/admin/events" and case.query and "after" in case.query:
        case.query["after"] = SEED["eventId"]
    _pin_path(case)


@schemathesis.hook
def after_call(context: HookContext, case: "Case[Any]", response: Response) -> None:
    """Remembers the orders the fuzzer locked, for later cases to settle, refund, pull."""
    body = case.body
    if not case.operation.path.endswith("/lock_market_pay_order") or response.status_code != 200:
        return
    assert isinstance(body, dict)
    order = {k: str(body[k]) for k in ("source", "channel", "userId", "outTradeNo")}
    order["teamId"] = str(response.json()["data"]["teamId"])
    with _lock:
        (_to_settle if _half(order["outTradeNo"]) else _orders).append(order)


def _pairs_repeat(body: dict[str, Any]) -> bool:
    """Two bindings naming one source+channel (uniqueItems compares whole objects, and a
    generated object may carry properties the server ignores)."""
    bindings = body.get("bindings")
    if not isinstance(bindings, list):
        return False
    pairs = [(b.get("source"), b.get("channel")) for b in bindings if isinstance(b, dict)]
    return len(set(pairs)) < len(pairs)


@schemathesis.hook
def filter_failure(
    context: HookContext, failure: Failure, case: "Case[Any]", response: Response
) -> bool:
    """False (dropped) only for a refusal of the cross-field rule the case breaks."""
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 400:
        return True
    body = case.body
    if not isinstance(body, dict):
        return True
    if case.operation.path == "/api/v1/admin/merchants/{merchantId}":
        return not (_pairs_repeat(body) and "listed twice" in response.text)
    if case.operation.path.endswith("/endpoints/{endpointId}"):
        stateful = ("secret: can be given only when creating", "not held by merchant")
        return not (
            (body.get("secret") is not None and stateful[0] in response.text)
            or (bool(body.get("channels")) and stateful[1] in response.text)
        )
    if case.operation.path != "/api/v1/admin/activities/{activityId}":
        return True
    start, end = _time(body.get("startTime")), _time(body.get("endTime"))
    breaks_rule = start is not None and end is not None and end <= start
    return not (breaks_rule and "endTime must be after startTime" in response.text)
