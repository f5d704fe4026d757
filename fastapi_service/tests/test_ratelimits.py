"""RateLimits: the moving window per key, the 429's Retry-After, the off switch, Redis down."""

from __future__ import annotations

import ipaddress
import logging
import socket
import uuid

import pytest
from pydantic import ValidationError

from fastapi_service.problems import RateLimited
from fastapi_service.ratelimits import RateLimits, client_address
from fastapi_service.settings import Settings

pytestmark = pytest.mark.anyio
LOW = {
    "rate_limit_login": "2/minute",
    "rate_limit_login_per_ip": "3/minute",
    "rate_limit_writes": "2/minute",
    "rate_limit_writes_per_ip": "3/minute",
}


def _nowhere() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{probe.getsockname()[1]}/0"


async def test_writes_per_user_then_429_with_retry_after() -> None:
    limits = RateLimits(Settings(**LOW))  # type: ignore[arg-type]
    user = uuid.uuid4()
    await limits.check_writes(user, "10.0.0.1")
    await limits.check_writes(user, "10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        await limits.check_writes(user, "10.0.0.1")
    assert refused.value.status == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    await limits.check_writes(uuid.uuid4(), "10.0.0.1")  # another user: a budget of its own


async def test_one_address_counts_every_user_and_sign_ups() -> None:
    limits = RateLimits(Settings(**LOW))  # type: ignore[arg-type]
    for _ in range(3):
        await limits.check_writes(uuid.uuid4(), "10.0.0.2")
    with pytest.raises(RateLimited):
        await limits.check_writes(None, "10.0.0.2")
    await limits.check_writes(None, "10.0.0.3")


async def test_login_per_account_ignores_case_and_address() -> None:
    limits = RateLimits(Settings(**LOW))  # type: ignore[arg-type]
    await limits.check_login("10.0.0.4", "A@example.test")
    await limits.check_login("10.0.0.5", "a@example.test")
    with pytest.raises(RateLimited):
        await limits.check_login("10.0.0.6", "a@EXAMPLE.test")
    await limits.check_login("10.0.0.6", "b@example.test")


async def test_login_per_address() -> None:
    limits = RateLimits(Settings(**LOW))  # type: ignore[arg-type]
    for _ in range(3):
        await limits.check_login("10.0.0.7")
    with pytest.raises(RateLimited):
        await limits.check_login("10.0.0.7")


async def test_switched_off_never_refuses() -> None:
    limits = RateLimits(Settings(rate_limit_enabled=False, **LOW))  # type: ignore[arg-type]
    user = uuid.uuid4()
    for _ in range(20):
        await limits.check_writes(user, "10.0.0.8")
        await limits.check_login("10.0.0.8", "a@example.test")


async def test_redis_down_counts_in_memory_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    limits = RateLimits(Settings(redis_url=_nowhere(), **LOW))  # type: ignore[arg-type]
    user = uuid.uuid4()
    with caplog.at_level(logging.WARNING, logger="fastapi_service.ratelimits"):
        await limits.check_writes(user, "10.0.0.9")
        await limits.check_writes(user, "10.0.0.9")
        with pytest.raises(RateLimited):
            await limits.check_writes(user, "10.0.0.9")
    warnings = [r for r in caplog.records if "storage unreachable" in r.getMessage()]
    assert len(warnings) == 1  # then it counts in memory until the next recheck


@pytest.mark.parametrize("value", ["", "often", "0/minute", "10/minute;100/hour", "10/fortnight"])
def test_settings_refuse_a_malformed_limit(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_WRITES", value)
    with pytest.raises(ValidationError, match="rate_limit_writes"):
        Settings()


def test_settings_read_the_contracts_names(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert defaults.rate_limit_enabled is True
    assert (defaults.rate_limit_login, defaults.rate_limit_login_per_ip) == (
        "10/minute",
        "30/minute",
    )
    assert (defaults.rate_limit_writes, defaults.rate_limit_writes_per_ip) == (
        "120/minute",
        "600/minute",
    )
    env = {
        "RATE_LIMIT_ENABLED": "false",
        "RATE_LIMIT_LOGIN": "5/minute",
        "RATE_LIMIT_LOGIN_PER_IP": "6 per minute",
        "RATE_LIMIT_WRITES": "7/second",
        "RATE_LIMIT_WRITES_PER_IP": "8/hour",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.rate_limit_enabled is False
    assert (settings.rate_limit_login, settings.rate_limit_login_per_ip) == (
        "5/minute",
        "6 per minute",
    )
    assert (settings.rate_limit_writes, settings.rate_limit_writes_per_ip) == ("7/second", "8/hour")


PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("192.0.2.1", None, "192.0.2.1"),
        ("192.0.2.1", "198.51.100.7", "192.0.2.1"),  # an untrusted peer's header is ignored
        ("10.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.1", "203.0.113.9, 198.51.100.7", "198.51.100.7"),  # the rightmost untrusted
        ("10.0.0.1", "198.51.100.7, 10.1.1.1", "198.51.100.7"),  # proxies in the chain skipped
        ("fd00::1", "2001:db8::5", "2001:db8::5"),
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "not-an-address", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.7, junk, 10.1.1.1", "10.1.1.1"),
    ],
)
def test_client_address(peer: str, forwarded_for: str | None, client: str) -> None:
    assert client_address(peer, forwarded_for, PROXIES) == client


def test_settings_read_trusted_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().trusted_proxies == ()
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
    assert Settings().trusted_proxies == ("10.0.0.0/8", "192.0.2.1")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8,proxy.example")
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings()
