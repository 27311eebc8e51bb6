"""Pure callback decisions: outcome, schedule, Retry-After, signature (no I/O)."""

import base64
import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from groupbuy_async.callbacks.rules import (
    AttemptOutcome,
    BrokerAnswer,
    NotifyStatus,
    decide,
    is_success,
    parse_retry_after,
    sign,
    unreachable,
    url_problem,
)
from groupbuy_async.merchants.secret_box import signing_key as decode_webhook_secret
from groupbuy_async.settings import parse_schedule

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SCHEDULE = parse_schedule("15s,15s,30s")
RNG = random.Random(7)


def ok(body: str = "success", status: int = 200) -> AttemptOutcome:
    return AttemptOutcome(http_status=status, body=body)


def test_success_needs_2xx_and_the_word_success() -> None:
    assert decide(ok(" success\n"), 1, SCHEDULE, NOW).status is NotifyStatus.SUCCESS
    assert decide(ok("ok"), 1, SCHEDULE, NOW).status is NotifyStatus.RETRY
    assert decide(ok("success", 500), 1, SCHEDULE, NOW).status is NotifyStatus.RETRY
    assert decide(ok("ok", 204), 1, SCHEDULE, NOW, accept_any_2xx=True).status is (
        NotifyStatus.SUCCESS
    )


@pytest.mark.parametrize("body", ["success", " success\n", "\tsuccess\r\n"])
def test_the_exact_word_success_around_whitespace_is_success(body: str) -> None:
    assert decide(ok(body), 1, SCHEDULE, NOW).status is NotifyStatus.SUCCESS


@pytest.mark.parametrize(
    "body",
    ["not success", "success!", "successful", "unsuccessful", "success success", "SUCCESS",
     "Success", "", "succes", '"success"', "success\x00"],
)  # fmt: skip
def test_only_the_exact_word_success_is_success(body: str) -> None:
    # The contract is the merchant answering exactly `success` (case-sensitive, whitespace
    # around it ignored); a body that merely contains the word is a failed attempt.
    verdict = decide(ok(body), 1, SCHEDULE, NOW)
    assert verdict.status is NotifyStatus.RETRY, body
    assert verdict.error == "HTTP 200 with body other than 'success'"


@pytest.mark.parametrize("status", [300, 301, 302, 303, 304, 307, 308])
def test_a_redirect_saying_success_is_a_failed_attempt(status: int) -> None:
    verdict = decide(ok("success", status), 1, SCHEDULE, NOW)
    assert verdict.status is NotifyStatus.RETRY and verdict.error == f"HTTP {status}"
    assert verdict.next_attempt_at is not None
    # Not even when any 2xx would do.
    loose = decide(ok("success", status), 1, SCHEDULE, NOW, accept_any_2xx=True)
    assert loose.status is NotifyStatus.RETRY


def test_every_2xx_saying_success_is_success() -> None:
    for status in (200, 201, 202, 299):
        assert decide(ok("success", status), 1, SCHEDULE, NOW).status is NotifyStatus.SUCCESS
    assert decide(ok("success", 199), 1, SCHEDULE, NOW).status is NotifyStatus.RETRY


def test_a_broker_confirm_is_success_and_its_refusals_are_failed_answered_attempts() -> None:
    confirmed = AttemptOutcome(None, broker=BrokerAnswer.CONFIRMED)
    assert decide(confirmed, 1, SCHEDULE, NOW) == decide(ok(), 1, SCHEDULE, NOW)
    assert is_success(confirmed, accept_any_2xx=False) and not unreachable(confirmed)
    for answer in (BrokerAnswer.NACKED, BrokerAnswer.RETURNED, BrokerAnswer.CLOSED):
        refused = AttemptOutcome(None, error=f"{answer.value}: why", broker=answer)
        verdict = decide(refused, 1, SCHEDULE, NOW, accept_any_2xx=True, rng=RNG)
        assert (verdict.status, verdict.error) == (NotifyStatus.RETRY, f"{answer.value}: why")
        assert not unreachable(refused)  # the broker answered: not one for the breaker
        last = decide(refused, len(SCHEDULE) + 1, SCHEDULE, NOW)
        assert last.status is NotifyStatus.ERROR
    # No answer from a broker (a lost connection, a timeout): unanswered, as an HTTP timeout.
    lost = AttemptOutcome(None, error="broker connection: reset")
    assert unreachable(lost) and decide(lost, 1, SCHEDULE, NOW).status is NotifyStatus.RETRY


def test_failures_follow_the_schedule_with_jitter_then_give_up() -> None:
    failure = AttemptOutcome(None, error="ConnectionRefused")
    for attempt, base in enumerate(SCHEDULE, start=1):
        verdict = decide(failure, attempt, SCHEDULE, NOW, rng=RNG)
        assert verdict.status is NotifyStatus.RETRY and verdict.error == "ConnectionRefused"
        assert verdict.next_attempt_at is not None
        assert base * 0.8 <= verdict.next_attempt_at - NOW <= base * 1.2
    final = decide(failure, len(SCHEDULE) + 1, SCHEDULE, NOW)
    assert final.status is NotifyStatus.ERROR and final.next_attempt_at is None


def test_original_five_tries_fifteen_seconds_apart() -> None:
    schedule = parse_schedule("15,15,15,15")
    statuses = [decide(ok("error"), n, schedule, NOW).status for n in range(1, 6)]
    assert statuses == [NotifyStatus.RETRY] * 4 + [NotifyStatus.ERROR]


def test_gone_and_permanent_failures_stop_at_once() -> None:
    assert decide(ok("", 410), 1, SCHEDULE, NOW).status is NotifyStatus.ERROR
    bad = AttemptOutcome(None, error="invalid notifyUrl", permanent=True)
    assert decide(bad, 1, SCHEDULE, NOW).status is NotifyStatus.ERROR


def test_retry_after_is_honoured_on_429_and_503_only() -> None:
    limited = AttemptOutcome(429, retry_after="120")
    assert decide(limited, 1, SCHEDULE, NOW).next_attempt_at == NOW + timedelta(seconds=120)
    busy = AttemptOutcome(503, retry_after="Thu, 26 Nov 2026 12:10:00 GMT")
    assert decide(busy, 1, SCHEDULE, NOW).next_attempt_at == NOW + timedelta(minutes=10)
    other = decide(AttemptOutcome(500, retry_after="999"), 1, SCHEDULE, NOW)
    assert other.next_attempt_at is not None and other.next_attempt_at - NOW < timedelta(seconds=20)
    assert parse_retry_after("nonsense", NOW) is None
    assert parse_retry_after("99999999", NOW) == timedelta(hours=24)


def test_signature_verifies_with_standardwebhooks() -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    body = '{"teamId":"12345678","outTradeNoList":["a"]}'
    timestamp = int(NOW.timestamp())
    header = sign(decode_webhook_secret(secret), "evt_1", timestamp, body)
    # The library's own signer agrees byte for byte (its verify() is exercised end to end).
    assert Webhook(secret).sign("evt_1", NOW, body) == header


def test_url_problems() -> None:
    assert url_problem("https://merchant.example/cb") is None
    assert url_problem("ftp://x/y") is not None
    assert url_problem("http://host:99999/") is not None
    assert url_problem("not a url") is not None
