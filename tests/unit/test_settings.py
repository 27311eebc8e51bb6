"""Settings are parsed once, at start, into the types the code uses; secrets stay hidden."""

from datetime import timedelta

import pytest
from pydantic import ValidationError

from groupbuy_async.settings import Settings, SettingsError, load_settings

from ..conftest import SECRETS_KEY


@pytest.fixture(autouse=True)
def _no_groupbuy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in os.environ:
        if name.startswith("GROUPBUY_"):
            monkeypatch.delenv(name)


def test_blacklist_is_a_frozenset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPBUY_SC_BLACKLIST", "s02c02, s03c01")
    assert load_settings().sc_blacklist == frozenset({"s02c02", "s03c01"})
    assert isinstance(load_settings().sc_blacklist, frozenset)
    assert Settings(sc_blacklist="s02c02,,").sc_blacklist == frozenset({"s02c02"})
    monkeypatch.delenv("GROUPBUY_SC_BLACKLIST")
    assert Settings().sc_blacklist == frozenset()


def test_retry_schedule_is_a_tuple_of_timedeltas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPBUY_NOTIFY_RETRY_SCHEDULE", "15s, 3m,1h,30")
    schedule = load_settings().notify_retry_schedule
    assert schedule == (
        timedelta(seconds=15), timedelta(minutes=3), timedelta(hours=1), timedelta(seconds=30),
    )  # fmt: skip
    monkeypatch.delenv("GROUPBUY_NOTIFY_RETRY_SCHEDULE")
    default = Settings().notify_retry_schedule
    assert isinstance(default, tuple) and len(default) == 15
    assert all(isinstance(d, timedelta) for d in default)


def test_secrets_key_is_checked_and_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPBUY_SECRETS_KEY", SECRETS_KEY)
    settings = load_settings()
    assert settings.sealing_key == SECRETS_KEY
    for shown in (repr(settings), str(settings), repr(settings.secrets_key)):
        assert SECRETS_KEY not in shown
    monkeypatch.delenv("GROUPBUY_SECRETS_KEY")
    assert Settings().sealing_key is None


def test_admin_token_is_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPBUY_ADMIN_TOKEN", "tok-very-secret")
    settings = load_settings()
    assert settings.admin_secret == "tok-very-secret"
    assert "tok-very-secret" not in repr(settings) and "tok-very-secret" not in str(settings)
    monkeypatch.delenv("GROUPBUY_ADMIN_TOKEN")
    assert Settings().admin_secret is None


def test_model_copy_validates_the_update() -> None:
    settings = Settings()
    copied = settings.model_copy(update={"sc_blacklist": "a1b1, a2b2", "port": "9000"})
    assert copied.sc_blacklist == frozenset({"a1b1", "a2b2"}) and copied.port == 9000
    assert copied.notify_retry_schedule == settings.notify_retry_schedule
    with pytest.raises(ValidationError):
        settings.model_copy(update={"port": "abc"})
    with pytest.raises(ValidationError):
        settings.model_copy(update={"secrets_key": "not-a-fernet-key"})
    with pytest.raises(ValidationError):
        settings.model_copy(update={"db_pool_max": 0})


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "hidden"),
    [
        ("port", "abc", "abc"),
        ("db_pool_max", "0", None),
        ("log_level", "LOUD", "LOUD"),
        ("secrets_key", "c2hvcnRrZXk=", "c2hvcnRrZXk"),  # base64, but of 8 bytes
        ("secrets_key", SECRETS_KEY[:-2] + "!!", SECRETS_KEY[:-2]),
        ("notify_retry_schedule", "15s,later", "later"),
        ("notify_retry_schedule", "15s,99d", "99d"),
        ("notify_accept_any_2xx", "perhaps", "perhaps"),
        ("database_url", "mysql://app:hunter2@db/x", "hunter2"),
        ("redis_url", "http://:hunter2@cache/0", "hunter2"),
        ("redis_url", "redis://:hunter2@cache:port/0", "hunter2"),
        ("amqp_url", "http://guest:hunter2@rabbit:5672/", "hunter2"),
        ("amqp_url", "amqp://guest:hunter2@rabbit:56x72/", "hunter2"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting_never_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, hidden: str | None
) -> None:
    monkeypatch.setenv(f"GROUPBUY_{name.upper()}", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"GROUPBUY_{name.upper()}: ") and "\n" not in message
    assert "(expected: " in message
    if hidden:
        assert hidden not in message, message


def test_every_bad_field_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(port="abc", log_level="LOUD")
    message = str(caught.value)
    assert "GROUPBUY_PORT: " in message and "GROUPBUY_LOG_LEVEL: " in message


def test_server_urls_are_checked_by_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    multi_host = "postgresql://app:pw@db1:5432,db2:5432/groupbuy"  # libpq/asyncpg accept it
    monkeypatch.setenv("GROUPBUY_DATABASE_URL", multi_host)
    monkeypatch.setenv("GROUPBUY_REDIS_URL", "rediss://cache:6380/1")
    settings = load_settings()
    assert settings.database_url == multi_host and settings.redis_url == "rediss://cache:6380/1"
    assert load_settings(database_url="", redis_url="").database_url is None
    monkeypatch.setenv("GROUPBUY_AMQP_URL", "amqps://app:pw@rabbit:5671/shops")
    assert load_settings().amqp_url == "amqps://app:pw@rabbit:5671/shops"
    assert load_settings(amqp_url="").amqp_url is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db:5432/groupbuy", "db:5432"),
        ("postgresql://app:hunter2@db1:5432,db2:5432/groupbuy", "db1:5432,db2:5432"),
        ("postgresql://app:hunter2@/groupbuy?host=/run/postgresql", "/run/postgresql"),
        ("redis://:hunter2@cache:6379/0", "cache:6379"),
        ("unix:///run/redis.sock", "/run/redis.sock"),
    ],
)
def test_startup_errors_name_a_server_without_its_credentials(url: str, shown: str) -> None:
    from groupbuy_async.process.reasons import server_address

    assert server_address(url) == shown


def test_retention_is_whole_days_of_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().retention_days, Settings().prune_cron_seconds) == (30, 300)
    monkeypatch.setenv("GROUPBUY_RETENTION_DAYS", "7")
    assert load_settings().retention_days == 7
    for bad in ("0", "-1", "1.5", "a month"):
        monkeypatch.setenv("GROUPBUY_RETENTION_DAYS", bad)
        with pytest.raises(SettingsError, match="GROUPBUY_RETENTION_DAYS"):
            load_settings()
