from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def parse_schedule(raw: str) -> tuple[timedelta, ...]:
    """'15s,3m,1h' or plain seconds '15,15' -> delays between attempts."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    delays = []
    for part in raw.split(","):
        part = part.strip().lower()
        if not part:
            continue
        unit = units.get(part[-1])
        number = part[:-1] if unit else part
        seconds = float(number) * (unit or 1)
        if seconds < 0:
            raise ValueError(f"negative delay in retry schedule: {part!r}")
        delays.append(timedelta(seconds=seconds))
    return tuple(delays)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GROUPBUY_", extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str | None = None
    # Entries are source+channel concatenated, as in the original ("s02c02").
    sc_blacklist: str = ""
    data_dir: Path = Path(".data")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=20, ge=1)
    fail_teams_cron_seconds: int = Field(default=15, ge=1)

    notify_secret: str | None = None
    notify_accept_any_2xx: bool = False
    notify_retry_schedule: str = "15s,15s,30s,3m,10m,20m,30m,30m,30m,1h,3h,3h,3h,6h,6h"
    notify_timeout_seconds: float = Field(default=10.0, gt=0)
    notify_cron_seconds: int = Field(default=15, ge=1)
    notify_concurrency: int = Field(default=100, ge=1)
    notify_per_host: int = Field(default=16, ge=1)
    notify_batch_size: int = Field(default=500, ge=1)
    notify_block_private: bool = False
    notify_immediate_limit: int = Field(default=256, ge=1)
    # Set to serve the worker's own /metrics (its compensation sends) on GROUPBUY_HOST.
    worker_metrics_port: int | None = None
    # The original's TestApiClientController at /api/v1/test/group_buy_notify.
    mock_merchant: bool = True

    @field_validator("notify_secret")
    @classmethod
    def _secret_decodes(cls, value: str | None) -> str | None:
        if value:
            from .notify_rules import secret_key

            secret_key(value)
        return value

    @field_validator("notify_retry_schedule")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @property
    def blacklist(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.sc_blacklist.split(",") if p.strip())

    @property
    def signing_key(self) -> bytes | None:
        from .notify_rules import secret_key

        return secret_key(self.notify_secret) if self.notify_secret else None

    @property
    def retry_schedule(self) -> tuple[timedelta, ...]:
        return parse_schedule(self.notify_retry_schedule)

    @property
    def notify_lease(self) -> timedelta:
        # Longer than one attempt (timeout plus transport retries) with margin,
        # so a live holder never loses its claim to another dispatcher.
        return timedelta(seconds=self.notify_timeout_seconds * 3 + 30)
