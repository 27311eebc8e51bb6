"""Settings from GROUPBUY_* environment variables, parsed once at start into typed values.

Production defaults are the strict ones; `groupbuy-async dev` relaxes what the local demo
needs and says so.
"""

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from yarl import URL

ENV_PREFIX = "GROUPBUY_"
DEFAULT_SCHEDULE = "15s,15s,30s,3m,10m,20m,30m,30m,30m,1h,3h,3h,3h,6h,6h"


def parse_schedule(raw: str) -> tuple[timedelta, ...]:
    """'15s,3m,1h' or plain seconds '15,15' -> delays between attempts."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    delays = []
    # Errors name the entry by position, never by its text: settings errors echo no value.
    for position, part in enumerate(raw.split(","), 1):
        part = part.strip().lower()
        if not part:
            continue
        unit = units.get(part[-1])
        number = part[:-1] if unit else part
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            raise ValueError(f"entry {position} is not a delay like 15s, 3m, 1h or 30") from None
        if not 0 <= seconds <= 30 * 86400:
            raise ValueError(f"entry {position} must be a delay between 0 and 30 days")
        delays.append(timedelta(seconds=seconds))
    return tuple(delays)


def _schedule(value: Any) -> Any:
    return parse_schedule(value) if isinstance(value, str) else value


def _comma_set(value: Any) -> Any:
    if isinstance(value, str):
        return frozenset(p.strip() for p in value.split(",") if p.strip())
    return value


def _fernet_key(value: Any) -> Any:
    """URL-safe base64 of 32 bytes (the Fernet key format); errors never echo it."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        if not value:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32 or len(value) != 44:
            raise ValueError("must be URL-safe base64 of 32 bytes (a Fernet key)")
    return value


def _url(*schemes: str, single_host: bool = True) -> Callable[[str | None], str | None]:
    """A server URL with one of `schemes` (and, if `single_host`, a readable host and port);
    errors never echo it: a DSN may carry a password."""
    *others, last = [f"{scheme}://" for scheme in schemes]
    choices = f"{', '.join(others)} or {last}" if others else last
    wanted = f"must be a {choices} URL"

    def check(value: str | None) -> str | None:
        if not value:
            return None
        if value.partition("://")[0].lower() not in schemes:
            raise ValueError(wanted)
        if single_host:
            try:
                URL(value).port  # noqa: B018 -- parses host and port, raising on a bad one
            except ValueError:
                raise ValueError(f"{wanted}, with a numeric port") from None
        return value

    return check


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Seconds = Annotated[float, Field(gt=0, le=3600)]
CronSeconds = Annotated[int, Field(ge=1, le=3600)]


class Settings(BaseSettings):
    """Every field is GROUPBUY_<NAME>; descriptions feed `--help` and the README table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: Annotated[
        str | None, AfterValidator(_url("postgresql", "postgres", single_host=False))
    ] = Field(None, description="PostgreSQL DSN, postgresql://user:password@host:port/database")
    redis_url: Annotated[str | None, AfterValidator(_url("redis", "rediss", "unix"))] = Field(
        None, description="Redis URL for arq (worker only), redis://host:port/db"
    )
    host: str = Field("127.0.0.1", description="address the API (and worker metrics) bind to")
    port: int = Field(8080, ge=0, le=65535, description="API port, 0-65535")
    admin_token: SecretStr | None = Field(
        None, description="bearer token for /api/v1/admin/*; unset = admin refused"
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="bearer token Prometheus sends for /metrics (API and worker); unset ="
        " /metrics refused",
    )
    sc_blacklist: Annotated[frozenset[str], NoDecode, BeforeValidator(_comma_set)] = Field(
        frozenset(), description="source+channel pairs refused at settlement, e.g. s02c02,s03c01"
    )
    data_dir: Path = Field(Path(".data"), description="where `dev` keeps embedded servers' data")
    log_format: Literal["text", "json"] = Field("text", description="text or json")
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    db_pool_min: int = Field(2, ge=1, le=1000, description="asyncpg pool minimum per process")
    db_pool_max: int = Field(20, ge=1, le=1000, description="asyncpg pool maximum per process")
    fail_teams_cron_seconds: CronSeconds = Field(
        15, description="worker: how often forming teams past their window are failed"
    )
    close_unpaid_cron_seconds: CronSeconds = Field(
        15, description="worker: how often locked orders past their payment timeout are closed"
    )
    secrets_key: Annotated[SecretStr | None, BeforeValidator(_fernet_key)] = Field(
        None,
        description="URL-safe base64 of 32 bytes (a Fernet key): seals endpoints' signing"
        " secrets in the database; required by api, worker and notify",
    )
    notify_accept_any_2xx: bool = Field(
        False, description="true: any 2xx is success (default: 2xx with body `success`)"
    )
    notify_retry_schedule: Annotated[
        tuple[timedelta, ...], NoDecode, BeforeValidator(_schedule)
    ] = Field(
        parse_schedule(DEFAULT_SCHEDULE),
        description=f"delays after each failed attempt, ±20 % jitter (default {DEFAULT_SCHEDULE})",
    )
    notify_timeout_seconds: Seconds = Field(10.0, description="one attempt's time limit")
    notify_cron_seconds: CronSeconds = Field(
        15, description="worker: how often due callbacks are drained"
    )
    notify_concurrency: int = Field(100, ge=1, le=10_000, description="sends in flight per process")
    notify_per_host: int = Field(16, ge=1, le=10_000, description="sends in flight per host")
    notify_batch_size: int = Field(500, ge=1, le=10_000, description="most tasks one claim takes")
    notify_block_private: bool = Field(
        True, description="refuse loopback/private/link-local/metadata callback targets"
    )
    endpoint_disable_after_seconds: int = Field(
        5 * 86400,
        ge=1,
        le=365 * 86400,
        description="an endpoint whose every attempt has failed this long (default 5 days) is"
        " disabled, its deliveries held",
    )
    endpoint_disable_min_attempts: int = Field(
        10,
        ge=1,
        le=1_000_000,
        description="...and only after at least this many failed attempts in a row",
    )
    notify_immediate_limit: int = Field(
        256, ge=1, le=100_000, description="API: post-settlement sends in flight before the worker"
    )
    amqp_url: Annotated[str | None, AfterValidator(_url("amqp", "amqps"))] = Field(
        None,
        description="RabbitMQ URL broker endpoints (kind amqp) publish to, amqp://user:password"
        "@host:port/vhost (or amqps://); unset = their deliveries fail, saying so",
    )
    queue_name: str = Field(
        "groupbuy:queue",
        min_length=1,
        max_length=200,
        description="worker: Redis key prefix of the workers' arq queues and heartbeats;"
        " distinct per deployment sharing a Redis database",
    )
    worker_max_outage_seconds: int = Field(
        300,
        ge=1,
        le=86_400,
        description="worker: exit 1 once PostgreSQL has been out of reach this long"
        " (until then it retries at every cron tick)",
    )
    retention_days: int = Field(
        30,
        ge=1,
        le=36_500,
        description="worker: days delivered and errored callback deliveries (with their"
        " attempts) and their events are kept, then pruned; trades are never pruned",
    )
    prune_cron_seconds: CronSeconds = Field(
        300, description="worker: how often what is past the retention is pruned"
    )
    worker_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="worker: serve /metrics on this port"
    )
    mock_merchant: bool = Field(
        False, description="serve the mock merchant at /api/v1/test/group_buy_notify (demo only)"
    )
    db_acquire_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = Field(
        3.0, description="longest wait for a pooled PostgreSQL connection (then 503 / an error)"
    )
    db_command_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        5.0, description="longest one SQL statement may take (then 503 / an error)"
    )
    api_event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="API: auto (uvloop when installed), uvloop or asyncio"
    )

    @property
    def sealing_key(self) -> str | None:
        return None if self.secrets_key is None else self.secrets_key.get_secret_value()

    @property
    def admin_secret(self) -> str | None:
        return None if self.admin_token is None else self.admin_token.get_secret_value()

    @property
    def metrics_secret(self) -> str | None:
        return None if self.metrics_token is None else self.metrics_token.get_secret_value()

    @property
    def notify_lease(self) -> timedelta:
        # Longer than one attempt (timeout plus transport retries) with margin,
        # so a live holder never loses its claim to another dispatcher.
        return timedelta(seconds=self.notify_timeout_seconds * 3 + 30)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with `update` validated like the environment would be."""
        if not update:
            return super().model_copy(deep=deep)
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**values, **update})


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it and never echoes its value."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        name = str(err["loc"][0]) if err["loc"] else "?"
        field = Settings.model_fields.get(name)
        hint = f" (expected: {field.description})" if field and field.description else ""
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{ENV_PREFIX}{name.upper()}: {message}{hint}")
    return "; ".join(parts)


def require(settings: Settings, *names: str) -> None:
    missing = [f"{ENV_PREFIX}{n.upper()}" for n in names if not getattr(settings, n)]
    if missing:
        raise SettingsError(f"{', '.join(missing)} must be set (or run `groupbuy-async dev`)")
