"""Pure callback decisions: signature, outcome, retry schedule, a host's breaker. No I/O here."""

import base64
import hashlib
import hmac
import ipaddress
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import Enum, IntEnum
from functools import lru_cache
from urllib.parse import urlsplit

MAX_RETRY_AFTER = timedelta(hours=24)
JITTER = 0.2


class NotifyStatus(IntEnum):
    INITIAL = 0
    SUCCESS = 1
    RETRY = 2
    ERROR = 3
    HELD = 4  # its endpoint is disabled: kept, not sent, due again once it is enabled


class BrokerAnswer(Enum):
    """What the broker answered a publish to a broker endpoint (kind amqp)."""

    CONFIRMED = "confirmed"  # acked (publisher confirm) after routing to a queue: delivered
    NACKED = "nacked"  # refused by the broker (Basic.Nack)
    RETURNED = "returned"  # unroutable: mandatory, and no queue bound for its routing key
    CLOSED = "closed"  # the broker closed the channel (no such exchange, access refused…)


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt produced. An HTTP attempt: its http_status, or the error that kept it
    from getting one. A publish to a broker: the broker's answer (None: none came, and
    error says why), error unless it was confirmed."""

    http_status: int | None
    body: str = ""
    error: str | None = None
    retry_after: str | None = None
    # A failure no retry can mend (bad URL, blocked address): give up at once.
    permanent: bool = False
    broker: BrokerAnswer | None = None


@dataclass(frozen=True)
class BrokerTarget:
    """Where a broker endpoint's events are published: an exchange ('' the default one,
    which routes by queue name) with a routing key."""

    exchange: str
    routing_key: str


@dataclass(frozen=True)
class Verdict:
    status: NotifyStatus
    next_attempt_at: datetime | None
    error: str | None


def sign(key: bytes, msg_id: str, timestamp: int, body: str) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(key: bytes, msg_id: str, timestamp: int, body: str, header: str) -> bool:
    expected = sign(key, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in header.split())


# A host made of numeric labels (decimal, octal with a leading 0, hex 0x…) is an IPv4 address
# to the C library whatever its form ("127.1", "2130706433", "0177.0.0.1", "0x7f.1").
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def host_problem(host: str) -> str | None:
    """Why a URL's host (as urlsplit gives it) is not in canonical form, or None.

    Only canonical forms are accepted, so that what is checked is what is connected to:
    ASCII (IDNA hosts as punycode), and an IPv4 address only as four plain decimal octets."""
    if not host.isascii() or not host.isprintable():
        return "host must be ASCII (use punycode for international names)"
    if ":" in host:  # IPv6 literal (urlsplit strips the brackets)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "host is not a valid IPv6 address"
        return None
    labels = host.split(".")
    if all(_NUMERIC_LABEL.match(label) for label in labels if label) or host.endswith("."):
        try:
            canonical = str(ipaddress.IPv4Address(host))
        except ValueError:
            canonical = ""
        if canonical != host:
            return "an IPv4 host must be four decimal octets, e.g. 203.0.113.7"
    return None


def is_blocked_ip(address: str) -> bool:
    """True for addresses callbacks must never reach: loopback, private, link-local, shared,
    reserved, multicast, unspecified (IPv4-mapped IPv6 judged by its IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def is_loopback_name(host: str) -> bool:
    """localhost and every name under it always mean this machine (RFC 6761 section 6.3),
    whatever a resolver says."""
    return host == "localhost" or host.endswith(".localhost")


@lru_cache(maxsize=4096)  # merchants' URLs repeat: parse each once
def url_problem(url: str, block_private: bool = False) -> str | None:
    """Why a notifyUrl can never be delivered to, or None when it is a valid http(s) URL
    with a canonical host (and, with `block_private`, not a blocked address literal)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"invalid notifyUrl: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "invalid notifyUrl: not an absolute http(s) URL"
    problem = host_problem(parts.hostname)
    if problem:
        return f"invalid notifyUrl: {problem}"
    if block_private and (is_blocked_ip(parts.hostname) or is_loopback_name(parts.hostname)):
        return (
            "notifyUrl points at a blocked address (loopback, private, link-local or metadata:"
            " refused while GROUPBUY_NOTIFY_BLOCK_PRIVATE is true)"
        )
    return None


def is_success(outcome: AttemptOutcome, accept_any_2xx: bool) -> bool:
    """HTTP: a 2xx with the body `success` (any 2xx with `accept_any_2xx`). A broker: its
    confirm of a routed message (publisher confirms, mandatory)."""
    if outcome.broker is not None:
        return outcome.broker is BrokerAnswer.CONFIRMED
    if outcome.http_status is None or not 200 <= outcome.http_status < 300:
        return False
    return accept_any_2xx or outcome.body.strip() == "success"


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        delay = timedelta(seconds=int(value))
    else:
        try:
            delay = parsedate_to_datetime(value) - now
        except (TypeError, ValueError):
            return None
    return min(max(delay, timedelta(0)), MAX_RETRY_AFTER)


def jittered(delay: timedelta, rng: random.Random | None = None) -> timedelta:
    factor = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return delay * factor


def decide(
    outcome: AttemptOutcome,
    attempt: int,
    schedule: tuple[timedelta, ...],
    now: datetime,
    accept_any_2xx: bool = False,
    rng: random.Random | None = None,
) -> Verdict:
    """The task's next state after its `attempt`-th try (1-based, counted since any replay).

    A failed attempt k waits schedule[k-1]; after the last scheduled retry fails, or on a
    410 Gone or a permanent failure, the task is in error for good.
    """
    if is_success(outcome, accept_any_2xx):
        return Verdict(NotifyStatus.SUCCESS, None, None)
    error = outcome.error or _describe_failure(outcome)
    if outcome.permanent or outcome.http_status == 410 or attempt > len(schedule):
        return Verdict(NotifyStatus.ERROR, None, error)
    delay = jittered(schedule[attempt - 1], rng)
    if outcome.http_status in (429, 503):
        delay = parse_retry_after(outcome.retry_after, now) or delay
    return Verdict(NotifyStatus.RETRY, now + delay, error)


def _describe_failure(outcome: AttemptOutcome) -> str:
    if outcome.broker is not None:
        return f"{outcome.broker.value} by the broker"
    if outcome.http_status is not None and 200 <= outcome.http_status < 300:
        return f"HTTP {outcome.http_status} with body other than 'success'"
    return f"HTTP {outcome.http_status}"


def unreachable(outcome: AttemptOutcome) -> bool:
    """The attempt got no answer: a timeout, a failed connect, a reset, a broker connection
    lost (not a refusal by rule, such as a blocked address; not a broker's nack or return)."""
    return outcome.http_status is None and outcome.broker is None and not outcome.permanent


class Admission(Enum):
    SEND = "send"  # closed
    PROBE = "probe"  # the pause is over: this send is the one probe
    WAIT = "wait"  # another send is probing: wait for its answer
    REFUSE = "refuse"  # paused: not attempted, due again when the pause ends


class BreakerChange(Enum):
    OPENED = "opened"
    REOPENED = "reopened"  # the probe got no answer
    CLOSED = "closed"  # the probe was answered


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int  # unanswered attempts in a row that pause a host
    pause: timedelta  # the first pause; doubled after each unanswered probe
    max_pause: timedelta


@dataclass
class Breaker:
    """One merchant host's circuit breaker: after `failures` unanswered attempts in a row
    the host is paused; when the pause is over one send probes it, the others wait for its
    answer. Answered (any HTTP response), it closes; unanswered, it pauses again, twice as
    long. Pure: the caller says what time it is."""

    failures: int = 0  # unanswered attempts in a row (while closed)
    until: datetime | None = None  # paused until then (None: closed)
    pause: timedelta = timedelta(0)  # the length of the last pause
    probing: bool = False  # the pause is over and the probe is out

    def paused(self, now: datetime) -> bool:
        """Its tasks are not to be claimed or sent now."""
        return self.until is not None and not self.probing and now < self.until

    def admit(self, now: datetime) -> Admission:
        if self.until is None:
            return Admission.SEND
        if self.probing:
            return Admission.WAIT
        if now < self.until:
            return Admission.REFUSE
        self.probing = True
        return Admission.PROBE

    def abandon_probe(self) -> None:
        """The probe was not sent after all: the next send probes instead."""
        self.probing = False

    def observe(
        self, answered: bool, probe: bool, now: datetime, policy: BreakerPolicy
    ) -> BreakerChange | None:
        """An attempt ended, answered or not; returns the change of state it made."""
        if probe:
            self.probing = False
            if answered:
                self.until, self.failures = None, 0
                return BreakerChange.CLOSED
            self.pause = min(max(self.pause * 2, policy.pause), policy.max_pause)
            self.until = now + self.pause
            return BreakerChange.REOPENED
        if self.until is not None:
            return None  # sent before the pause began: it says nothing the pause did not
        if answered:
            self.failures = 0
            return None
        self.failures += 1
        if self.failures < policy.failures:
            return None
        self.failures, self.pause, self.until = 0, policy.pause, now + policy.pause
        return BreakerChange.OPENED
