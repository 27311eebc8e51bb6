"""The fault scenarios. Each gets a fresh Stage (database, API, worker, merchants), drives
teams to completion over HTTP, injects its fault, waits for the outbox to drain (or a
deadline) and fills its Outcome; `expect` records what a scenario requires beyond the
common checks (lost 0, no duplicate that a kill -9 does not explain, trade invariants)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from groupbuy_async.dev.merchant_process import Tallied

from .broker import broker_kill9, broker_restart
from .harness import (
    IN_FLIGHT,
    LEASE,
    NOTIFY_TIMEOUT,
    SECRET,
    Outcome,
    Run,
    Stage,
    latency_note,
)  # fmt: skip
from .merchant import HOSTILE_PATHS, Merchant
from .shop import SETTLE, Call, Team, Tenant, drive, steady_load

# The worker's grace on SIGTERM (lifecycle.run_worker: NOTIFY_TIMEOUT_SECONDS + 5).
WORKER_GRACE = int(NOTIFY_TIMEOUT) + 5
# A server fault lasts this long.
OUTAGE = 5.0
# While PostgreSQL is down or frozen, an API call must be answered within this (with 503).
ANSWER_BOUND = 3.0  # the harness's DB acquire/statement limits (2 s) plus a margin
# The healthy merchant's delivery latency (settlement answered -> callback received) while
# another merchant hangs or misbehaves.
HEALTHY_P50, HEALTHY_P99 = 2.0, 5.0
# The API's and the worker's peak resident memory while merchants misbehave.
RSS_BOUND_MB = 300
# 8c: one attempt's time limit there, and the bound on each of the healthy endpoint's
# deliveries (settlement answered -> callback received): half of it. A healthy endpoint that
# waited behind the hanging one's sends (their cap, or its breaker's pause) would take at
# least a timeout.
SAME_HOST_TIMEOUT = 3.0
SAME_HOST_BOUND = SAME_HOST_TIMEOUT / 2

EXPECTATIONS = f"""\
Every scenario: lost 0 (each completed team's event id reached its merchant); a duplicate
only of a send in flight at a kill -9 (received at most {IN_FLIGHT:g} s before it) or while
PostgreSQL could not store the result (2, 4a, 5, 6), or of an attempt the sender itself timed
out (noted when it happens); the trade invariants in SQL; what the shoppers were told
(teamCompleted) equals the complete teams in the database.
3, 4b (SIGTERM): exit 0 within the grace, no duplicate at all.
5, 6 (PostgreSQL down / frozen {OUTAGE:g} s): every API call started meanwhile answered within
{ANSWER_BOUND:g} s, failures as 503. 7 (Redis down): every API call meanwhile answered 200.
8a, 8b, 9: the healthy merchant's p50 <= {HEALTHY_P50:g} s and p99 <= {HEALTHY_P99:g} s (settlement
answered -> callback received); no misbehaving merchant's task taken for delivered.
8c (two merchants' endpoints on one host:port, A's hangs, timeout {SAME_HOST_TIMEOUT:g} s): each of B's
callbacks within {SAME_HOST_BOUND:g} s of its settlement, exactly once, at B's path; every one of A's
still owed (pending or retrying) in the outbox; none at the other merchant's path.
9: the API's and the worker's RSS stay under {RSS_BOUND_MB} MB."""


@dataclass
class Scenario:
    number: str
    name: str
    what: str
    run: Callable[[Run, str, str], Awaitable[Outcome]]
    # Shares the servers with nothing else while it runs (it stops or freezes them).
    exclusive: bool = False


def kill_window(at: float) -> tuple[float, float]:
    """Sends in flight at a kill: received at most IN_FLIGHT before it."""
    return (at - IN_FLIGHT, at + 0.2)


def lease_deadline(at: float) -> float:
    """time.monotonic() by which everything held at a fault at `at` (time.time()) has
    fallen due again and been delivered."""
    return time.monotonic() + max(0.0, at - time.time()) + LEASE + 20


def in_outage(calls: list[Call], start: float, end: float) -> list[Call]:
    """Calls started while a server was down or frozen."""
    return [c for c in calls if start <= c.started <= end]


# --- 1 ------------------------------------------------------------------------------------


async def baseline(run: Run, number: str, name: str) -> Outcome:
    async with Stage(run, number, name, target=3) as s:
        healthy = await s.merchant("healthy")
        await s.worker.start()
        teams = [s.shop.new_team(healthy.url(), 3) for _ in range(40)]
        await drive(teams, 6, s.shop.trade)
        drained = await s.wait_drained([healthy], time.monotonic() + 30)
        s.outcome.expect(drained, "outbox not drained within 30 s")
        await s.account([healthy], latency=True)
        return s.outcome


# --- 2, 3 ----------------------------------------------------------------------------------


async def _backlog(s: Stage, merchant: Merchant, count: int) -> None:
    """`count` completed teams whose first (immediate) attempt failed, so that only the
    worker, not yet running, delivers them; then the merchant answers, slowly."""
    await merchant.set_mode("fail")
    teams = [s.shop.new_team(merchant.url(), 2) for _ in range(count)]
    await drive(teams, 6, s.shop.trade)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = await s.fetch(f"SELECT count(*) FROM {s.tasks} t WHERE notify_count = 0")
        if rows[0][0] == 0:
            break
        await asyncio.sleep(0.1)
    await merchant.set_mode("success", delay=0.3)


async def _mid_drain(s: Stage) -> Merchant:
    """A slow merchant's backlog of 120 callbacks, the worker draining it: 30 delivered."""
    m = await s.merchant("slow")
    await _backlog(s, m, 120)
    await s.worker.start()
    await s.worker_ready()
    if not await s.wait_for_receipts(m, 30, 30):
        s.outcome.problems.append("the worker delivered under 30 callbacks in 30 s")
    return m


async def worker_kill9(run: Run, number: str, name: str) -> Outcome:
    # Four sends per host in flight: the drain of 120 slow callbacks takes ~9 s.
    async with Stage(run, number, name, settings={"notify_per_host": "4"}) as s:
        m = await _mid_drain(s)
        killed = await s.worker.kill9()
        s.outcome.notes.append(f"kill -9 after {_oks(await m.receipts())} delivered")
        await asyncio.sleep(0.5)
        await s.worker.start()
        s.idle()
        drained = await s.wait_drained([m], lease_deadline(killed))
        s.outcome.expect(drained, "outbox not drained within the lease + 20 s after the kill")
        await s.account([m], excuse=[kill_window(killed)])
        return s.outcome


async def worker_sigterm(run: Run, number: str, name: str) -> Outcome:
    async with Stage(run, number, name, settings={"notify_per_host": "4"}) as s:
        m = await _mid_drain(s)
        sent = await s.worker.signal(signal.SIGTERM)
        code = await s.worker.wait(WORKER_GRACE + 10)
        took = time.time() - sent
        held = await s.fetch(
            f"SELECT count(*) FROM {s.tasks} t WHERE notify_status IN (0, 2)"
            " AND claim_token IS NOT NULL AND locked_until > now()"
        )
        await s.worker.start()
        s.idle()
        o = s.outcome
        o.notes.append(f"SIGTERM: exit {code} after {took:.1f}s, {held[0][0]} task(s) left leased")
        o.expect(code == 0, f"worker exit code on SIGTERM was {code}, not 0")
        o.expect(
            took <= WORKER_GRACE + 2, f"worker took {took:.1f}s to stop (grace {WORKER_GRACE}s)"
        )
        drained = await s.wait_drained([m], lease_deadline(sent))
        o.expect(drained, "outbox not drained within the lease + 20 s after SIGTERM")
        await s.account([m])  # graceful: no duplicate is excused
        return o


# --- 4 ------------------------------------------------------------------------------------


async def _api_fault(run: Run, number: str, name: str, graceful: bool) -> Outcome:
    async with Stage(run, number, name) as s:
        m = await s.merchant("healthy", delay=0.2)  # immediate sends are in flight at the fault
        await s.worker.start()
        fault: dict[str, float] = {}

        async def inject() -> None:
            await asyncio.sleep(1.5)
            deadline = time.monotonic() + 5
            while s.shop.in_flight[SETTLE] < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            fault["settling"] = s.shop.in_flight[SETTLE]
            if graceful:
                fault["at"] = await s.api.signal(signal.SIGTERM)
                fault["code"] = float(await s.api.wait(20) or 0)
            else:
                fault["at"] = await s.api.kill9()
            fault["down"] = time.time() - fault["at"]
            await asyncio.sleep(0.3)
            await s.api.start()
            fault["up"] = time.time()
            await s.api_ready()
            await asyncio.sleep(2)

        injector = asyncio.create_task(inject())
        await steady_load(s.shop, m.url(), 2, injector.done, concurrency=4, pause=0.1,
                          deadline=time.monotonic() + 60)  # fmt: skip
        await injector
        s.idle()
        o = s.outcome
        during = s.shop.calls_between(fault["at"], fault["up"])
        o.notes.append(
            f"{'SIGTERM' if graceful else 'kill -9'} with {fault['settling']:.0f} settlement(s) in"
            f" flight; until back up: {latency_note(during)}"
        )
        cut = [c for c in during if c.status is None and c.started < fault["at"]]
        if cut:
            o.notes.append(
                f"{len(cut)} call(s) sent before the {'SIGTERM' if graceful else 'kill'} got no"
                f" answer: " + ", ".join(
                    f"{c.path.rsplit('/', 1)[-1]} sent {fault['at'] - c.started:.3f}s before,"
                    f" {c.error.split(':')[0]} after {c.seconds:.3f}s" for c in cut
                )
            )  # fmt: skip
        if graceful:
            o.expect(fault["code"] == 0, f"API exit code on SIGTERM was {fault['code']:.0f}")
            o.notes.append(f"stopped in {fault['down']:.1f}s")
        drained = await s.wait_drained([m], lease_deadline(fault["at"]))
        o.expect(drained, "outbox not drained within the lease + 20 s after the fault")
        await s.account([m], excuse=[] if graceful else [kill_window(fault["at"])])
        return o


async def api_kill9(run: Run, number: str, name: str) -> Outcome:
    return await _api_fault(run, number, name, graceful=False)


async def api_sigterm(run: Run, number: str, name: str) -> Outcome:
    return await _api_fault(run, number, name, graceful=True)


# --- 5, 6, 7 --------------------------------------------------------------------------------


async def _server_fault(
    s: Stage,
    down: Callable[[], Awaitable[object]],
    up: Callable[[], Awaitable[object]],
    state: str = "down",
) -> tuple[Merchant, float, float, list[Call]]:
    """Steady trading through an OUTAGE-long fault; every callback needs the worker (the
    merchant refuses each first attempt). Returns the merchant, the fault's window and the
    API calls started in it (their latencies noted as made while the server was `state`)."""
    m = await s.merchant("fail-first", mode="fail-first")
    await s.worker.start()
    await s.worker_ready()
    window: dict[str, float] = {}

    async def inject() -> None:
        await asyncio.sleep(1.5)
        window["start"] = time.time()
        try:
            await down()
            window["down"] = time.time()
            await asyncio.sleep(OUTAGE)
        finally:
            window["up"] = time.time()
            await up()
            window["end"] = time.time()
        await asyncio.sleep(3)

    injector = asyncio.create_task(inject())
    try:
        await steady_load(s.shop, m.url(), 2, injector.done, concurrency=4, pause=0.1,
                          deadline=time.monotonic() + 90)  # fmt: skip
    finally:
        await injector  # the server is back up whatever happened to the load
    s.outcome.notes.append(
        f"fault: {window['down'] - window['start']:.1f}s to take down, {window['up'] - window['down']:.1f}s"
        f" out, {window['end'] - window['up']:.1f}s to bring back"
    )
    if not s.worker.unexpected_exits:
        s.outcome.notes.append("worker rode it out (no exit)")
    during = in_outage(s.shop.calls, window["start"], window["end"])
    s.outcome.notes.append(f"while {state}: {latency_note(during)}")
    return m, window["start"], window["end"], during


def _answers_quickly(o: Outcome, calls: list[Call], what: str) -> None:
    if not calls:
        o.problems.append(f"no API call started while {what}: the load missed the fault")
        return
    slowest = max(c.seconds for c in calls)
    o.expect(
        slowest <= ANSWER_BOUND,
        f"an API call took {slowest:.1f}s while {what} (bound {ANSWER_BOUND:g}s)",
    )
    wrong = [c for c in calls if c.status not in (200, 503)]
    if wrong:
        kinds = sorted({str(c.status or c.error.split(":")[0]) for c in wrong})
        o.problems.append(
            f"{len(wrong)} API call(s) while {what} answered {', '.join(kinds)}, not 503"
        )


async def postgres_stop(run: Run, number: str, name: str) -> Outcome:
    async with Stage(run, number, name) as s:
        m, start, end, during = await _server_fault(s, run.pg.stop, run.pg.restart)
        o = s.outcome
        _answers_quickly(o, during, "PostgreSQL was down")
        drained = await s.wait_drained([m], lease_deadline(end))
        o.expect(drained, "outbox not drained within the lease + 20 s after the restart")
        # Sends whose result could not be written back: in flight at the stop, or later.
        await s.account([m], excuse=[(start - IN_FLIGHT, end)])
        return o


async def postgres_freeze(run: Run, number: str, name: str) -> Outcome:
    async def freeze() -> None:
        run.pg.freeze()

    async def thaw() -> None:
        run.pg.thaw()

    async with Stage(run, number, name) as s:
        m, start, end, during = await _server_fault(s, freeze, thaw, "frozen")
        o = s.outcome
        _answers_quickly(o, during, "PostgreSQL was frozen")
        drained = await s.wait_drained([m], lease_deadline(end))
        o.expect(drained, "outbox not drained within the lease + 20 s after the thaw")
        await s.account([m], excuse=[(start - IN_FLIGHT, end + IN_FLIGHT)])
        return o


async def redis_stop(run: Run, number: str, name: str) -> Outcome:
    async with Stage(run, number, name) as s:
        m, _, end, during = await _server_fault(s, run.redis.stop, run.redis.restart)
        o = s.outcome
        failed = [c for c in during if c.status != 200]
        o.expect(
            not failed, f"{len(failed)} API call(s) failed while Redis was down (it needs none)"
        )
        drained = await s.wait_drained([m], lease_deadline(end))
        o.expect(drained, "outbox not drained within the lease + 20 s after the restart")
        o.expect(s.worker.running, "the worker is not running after Redis came back")
        await s.account([m])
        return o


# --- 8, 9 -----------------------------------------------------------------------------------


async def _hanging(run: Run, number: str, name: str, settings: dict[str, str]) -> Outcome:
    async with Stage(run, number, name, settings=settings) as s:
        hung = await s.merchant("hanging", mode="hang")
        healthy = await s.merchant("healthy")
        await s.worker.start()
        # One healthy team after every ten hanging ones, settled in that order.
        teams = [
            s.shop.new_team(healthy.url() if i % 11 == 10 else hung.url(), 2) for i in range(330)
        ]
        await drive(teams, 8, s.shop.lock)
        await drive(teams, 8, s.shop.settle)
        drained = await s.wait_drained([healthy], time.monotonic() + 60)
        o = s.outcome
        o.expect(drained, "the healthy merchant's callbacks not all delivered within 60 s")
        await s.account([healthy], latency=True)
        await _others(s, o, [hung], teams, healthy)
        _latency_bound(o)
        return o


async def hanging_merchant(run: Run, number: str, name: str) -> Outcome:
    return await _hanging(run, number, name, {})


async def hanging_overflow(run: Run, number: str, name: str) -> Outcome:
    # The API sends at most 16 callbacks itself; the rest are the worker's to deliver.
    return await _hanging(run, number, name, {"notify_immediate_limit": "16"})


async def hostile_merchants(run: Run, number: str, name: str) -> Outcome:
    async with Stage(run, number, name) as s:
        healthy = await s.merchant("healthy")
        hostile = await s.merchant(
            "hostile", HOSTILE_PATHS, hostile=True, redirect_to=healthy.url("redirected")
        )
        await s.worker.start()
        teams: list[Team] = []
        for i in range(8 * len(HOSTILE_PATHS)):
            teams.append(s.shop.new_team(hostile.url(HOSTILE_PATHS[i % len(HOSTILE_PATHS)]), 2))
            if i % 2:
                teams.append(s.shop.new_team(healthy.url(), 2))
        peak: dict[str, float] = {}
        sampler = asyncio.create_task(_sample_rss(s, peak))
        try:
            await drive(teams, 6, s.shop.trade)
            drained = await s.wait_drained([healthy], time.monotonic() + 60)
            # Every hostile task through its whole schedule: status 3 (error) at the end.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and set(await s.task_states([hostile])) - {3}:
                await asyncio.sleep(0.5)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        o = s.outcome
        o.expect(drained, "the healthy merchant's callbacks not all delivered within 60 s")
        await s.account([healthy], latency=True)
        await _others(s, o, [hostile], teams, healthy)
        followed = [r for r in await healthy.receipts() if r[3] != "/notify"]
        o.expect(not followed, f"{len(followed)} redirect(s) to the healthy merchant followed")
        for who, mb in sorted(peak.items()):
            o.expect(mb <= RSS_BOUND_MB, f"{who} peak RSS {mb:.0f} MB > {RSS_BOUND_MB} MB")
        o.notes.append(
            "peak RSS " + ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(peak.items()))
            + f" (the hostile merchant wrote {await hostile.huge_bytes() / 2**20:.0f} MB of huge bodies into its sockets)"
        )  # fmt: skip
        _latency_bound(o)
        return o


async def hanging_same_host(run: Run, number: str, name: str) -> Outcome:
    """Merchants A and B, each an endpoint on one merchant process (one host:port), A's path
    hanging: A's backlog fills A's per-endpoint cap with hanging sends and opens A's breaker,
    while B's teams complete; B's callbacks must not wait for A's."""
    settings = {"notify_timeout_seconds": f"{SAME_HOST_TIMEOUT:g}"}
    async with Stage(run, number, name, settings=settings) as s:
        shared = await s.merchant("shared", (), modes={"/a": "hang", "/b": "success"})
        a = await s.shop.add_tenant(Tenant("faults-a", "s0a", "c0a", 9_000_002, "goods-a"), 2)
        b = await s.shop.add_tenant(Tenant("faults-b", "s0b", "c0b", 9_000_003, "goods-b"), 2)
        a_url, b_url = shared.url("a"), shared.url("b")
        await s.shop.endpoint("hangs", a_url, SECRET, a)
        await s.shop.endpoint("answers", b_url, SECRET, b)
        await s.worker.start()
        await s.worker_ready()
        a_teams = [s.shop.new_team(a_url, 2, a) for _ in range(300)]
        backlog = asyncio.create_task(drive(a_teams, 6, s.shop.trade))
        # B's teams once A's cap is full of hanging sends, and while A's backlog grows.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not backlog.done():
            if sum(r[3] == "/a" for r in await shared.receipts()) >= 16:
                break
            await asyncio.sleep(0.05)
        hanging = sum(r[3] == "/a" for r in await shared.receipts())
        b_teams = [s.shop.new_team(b_url, 2, b) for _ in range(60)]

        async def paced(team: Team) -> None:
            await s.shop.trade(team)
            await asyncio.sleep(0.2)

        await drive(b_teams, 2, paced)
        a_done = sum(1 for t in a_teams if t.completed_at)
        await backlog
        s.idle()
        drained = await s.wait_drained([], time.monotonic() + 30, urls=[b_url])
        o = s.outcome
        o.expect(drained, "B's callbacks not all delivered within 30 s")
        await s.account([shared], latency=True, urls=[b_url])
        o.notes.append(
            f"B's 60 teams began with {hanging} of A's sends received (hanging) and ended with"
            f" {a_done} of A's 300 teams complete"
        )
        if o.slowest is None:
            o.problems.append("no latency of B's callbacks measured")
        else:
            never = f", {o.lost} never came" if o.lost else ""
            o.notes.append(f"B's slowest callback {o.slowest:.2f}s after its settlement{never}")
            o.expect(
                o.slowest <= SAME_HOST_BOUND and not o.lost,
                f"B's slowest callback took {o.slowest:.2f}s{never}; bound {SAME_HOST_BOUND:g}s"
                f" (A's endpoint's sends time out after {SAME_HOST_TIMEOUT:g}s)",
            )
        await _same_host_apart(s, o, shared, {"/a": a_teams, "/b": b_teams})
        return o


async def _same_host_apart(
    s: Stage, o: Outcome, shared: Merchant, teams: dict[str, list[Team]]
) -> None:
    """8c: each callback at its own merchant's path, B's once each, A's all still owed."""
    rows = await s.fetch(
        f"SELECT t.team_id, t.event_id::text, t.notify_url, t.notify_status FROM {s.tasks} t"
    )
    ids = {path: {r[1] for r in rows if r[2] == shared.url(path[1:])} for path in teams}
    receipts = await shared.receipts()
    for path, mine in ids.items():
        got = [r for r in receipts if r[3] == path]
        wrong = [r for r in got if r[0] not in mine]
        o.expect(not wrong, f"{len(wrong)} callback(s) at {path} of the other merchant's events")
    stray = [r for r in receipts if r[3] not in teams]
    o.expect(not stray, f"{len(stray)} callback(s) at neither merchant's path")
    # B's callbacks received while one of A's sends hung (each hangs until the timeout).
    hung = [r[1] for r in receipts if r[3] == "/a"]
    beside = sum(
        any(t <= r[1] <= t + SAME_HOST_TIMEOUT for t in hung) for r in receipts if r[3] == "/b"
    )
    o.notes.append(f"{beside} of B's callbacks received while one of A's sends hung")
    o.expect(beside > 0, "no B callback came while A's sends hung: the load missed the fault")
    b_got = [r[0] for r in receipts if r[3] == "/b"]
    o.expect(
        len(b_got) == len(set(b_got)),
        f"B's endpoint got {len(b_got) - len(set(b_got))} repeated request(s)",
    )
    a_rows = [r for r in rows if r[1] in ids["/a"]]
    completed_a = sum(1 for t in teams["/a"] if t.completed_at)
    states: dict[int, int] = {}
    for r in a_rows:
        states[r[3]] = states.get(r[3], 0) + 1
    o.notes.append(
        f"A: {len(a_rows)} deliveries by status {dict(sorted(states.items()))},"
        f" {sum(r[3] == '/a' for r in receipts)} of its sends hung"
    )
    o.expect(
        len(a_rows) == completed_a, f"{completed_a} of A's teams complete but {len(a_rows)} tasks"
    )
    owed = states.get(0, 0) + states.get(2, 0)
    o.expect(
        owed == len(a_rows),
        f"{len(a_rows) - owed} of A's deliveries not pending or retrying (status {states})",
    )


async def _others(
    s: Stage, o: Outcome, merchants: list[Merchant], teams: list[Team], healthy: Merchant
) -> None:
    """The misbehaving merchants' callbacks: each team's task exists (invariants), none is
    taken for delivered, and each is still owed (retry) or given up (error), never lost."""
    states = await s.task_states(merchants)
    count = sum(1 for t in teams if not t.notify_url.startswith(healthy.base))
    total = sum(states.values())
    o.notes.append(f"{total} misbehaving-merchant tasks by status {dict(sorted(states.items()))}")
    o.expect(total == count, f"{count} misbehaving-merchant teams but {total} tasks")
    o.expect(
        states.get(1, 0) == 0, f"{states.get(1, 0)} misbehaving-merchant task(s) marked delivered"
    )
    never = await s.fetch(
        f"SELECT count(*) FROM {s.tasks} t WHERE notify_url LIKE ANY($1) AND notify_count = 0",
        [f"{m.base}/%" for m in merchants],
    )
    if never[0][0]:
        o.notes.append(f"{never[0][0]} of them not attempted yet")


def _latency_bound(o: Outcome) -> None:
    if o.p50 is None or o.p99 is None:
        o.problems.append("no healthy-merchant latency measured")
        return
    o.expect(o.p50 <= HEALTHY_P50, f"healthy p50 {o.p50:.1f}s > {HEALTHY_P50:g}s")
    o.expect(o.p99 <= HEALTHY_P99, f"healthy p99 {o.p99:.1f}s > {HEALTHY_P99:g}s")


async def _sample_rss(s: Stage, peak: dict[str, float]) -> None:
    while True:
        for child in (s.api, s.worker):
            if child.running:
                mb = _rss_mb(child.pid)
                peak[child.name] = max(peak.get(child.name, 0.0), mb)
        await asyncio.sleep(0.2)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _oks(receipts: list[Tallied]) -> int:
    return sum(1 for r in receipts if r[2])


SCENARIOS = [
    Scenario("1", "baseline", "no fault", baseline),
    Scenario("2", "worker-kill9", "kill -9 the worker mid-drain, restart", worker_kill9),
    Scenario("3", "worker-sigterm", "SIGTERM the worker mid-drain, restart", worker_sigterm),
    Scenario("4a", "api-kill9", "kill -9 the API under settlements, restart", api_kill9),
    Scenario("4b", "api-sigterm", "SIGTERM the API under settlements, restart", api_sigterm),
    Scenario(
        "5",
        "postgres-stop",
        f"PostgreSQL stopped {OUTAGE:g} s under load",
        postgres_stop,
        exclusive=True,
    ),
    Scenario(
        "6",
        "postgres-freeze",
        f"PostgreSQL SIGSTOPped {OUTAGE:g} s under load",
        postgres_freeze,
        exclusive=True,
    ),
    Scenario(
        "7", "redis-stop", f"Redis stopped {OUTAGE:g} s under load", redis_stop, exclusive=True
    ),
    Scenario("8a", "hanging-merchant", "300 callbacks hang, 30 healthy", hanging_merchant),
    Scenario(
        "8b", "hanging-overflow", "as 8a, the API sending at most 16 itself", hanging_overflow
    ),
    Scenario(
        "8c",
        "hanging-same-host",
        "merchant A's endpoint hangs, B's answers, one host:port",
        hanging_same_host,
    ),
    Scenario(
        "9", "hostile-merchants", "garbage/huge/reset/trickle/... vs healthy", hostile_merchants
    ),
    Scenario(
        "10a",
        "broker-restart",
        "the RabbitMQ of a broker endpoint stopped (SIGTERM) mid-drain, restarted",
        broker_restart,
    ),
    Scenario(
        "10b",
        "broker-kill9",
        "the RabbitMQ of a broker endpoint killed (SIGKILL) mid-drain, restarted",
        broker_kill9,
    ),
]
