"""Rate limits (contract/README.md, "Rate limits"): the `limits` package, moving window.

The counters live in Redis when REDIS_URL is set, so every worker process (and every replica)
shares them; without it each process counts in its own memory. When Redis cannot be reached the
limits go on in each process's memory (one WARNING line) and Redis is tried again at most every
RECHECK_SECONDS: no request fails, and none waits longer than STORAGE_TIMEOUT_SECONDS, because
of the limiter.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
import uuid
from typing import cast

import limits
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from .problems import RateLimited
from .settings import SERVICE_NAME, Settings

RECHECK_SECONDS = 5.0
STORAGE_TIMEOUT_SECONDS = 0.5

logger = logging.getLogger(__name__)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy (TRUSTED_PROXIES);
    then the rightmost X-Forwarded-For entry that is not itself a trusted proxy."""
    hops = [peer, *reversed([hop.strip() for hop in (forwarded_for or "").split(",")])]
    for hop, previous in zip(hops[1:], hops, strict=False):
        if not _is_trusted(previous, trusted):
            return previous
        if not _valid(hop):
            return previous  # a malformed entry ends the chain at the last proxy that wrote one
    return hops[-1] if _valid(hops[-1]) else peer


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class RateLimits:
    """The contract's four limits; each `check_*` raises RateLimited (429) once one is reached."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.trusted_proxies = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in settings.trusted_proxies
        )
        self.login = limits.parse(settings.rate_limit_login)
        self.login_per_ip = limits.parse(settings.rate_limit_login_per_ip)
        self.writes = limits.parse(settings.rate_limit_writes)
        self.writes_per_ip = limits.parse(settings.rate_limit_writes_per_ip)
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared_storage: Storage | None = None
        if self.enabled and settings.redis_url:
            storage = storage_from_string(
                f"async+{settings.redis_url}",
                implementation="redispy",  # redis.asyncio, the client the service already uses
                key_prefix=SERVICE_NAME,  # two services on one Redis keep their own counters
                wrap_exceptions=True,
                socket_timeout=STORAGE_TIMEOUT_SECONDS,
                socket_connect_timeout=STORAGE_TIMEOUT_SECONDS,
            )
            self._shared_storage = cast(Storage, storage)
        self._shared = (
            MovingWindowRateLimiter(self._shared_storage) if self._shared_storage else None
        )
        self._down_since: float | None = None

    async def check_login(self, client_ip: str, email: str | None = None) -> None:
        """Per client address; with `email`, per account (the address is counted separately)."""
        if email is None:
            await self._hit(self.login_per_ip, "login-ip", client_ip)
        else:
            await self._hit(self.login, "login-account", email.lower())

    async def check_writes(self, user_id: uuid.UUID | None, client_ip: str) -> None:
        """Per user (when signed in), then per client address."""
        if user_id is not None:
            await self._hit(self.writes, "writes-user", str(user_id))
        await self._hit(self.writes_per_ip, "writes-ip", client_ip)

    async def _limiter(self) -> MovingWindowRateLimiter:
        if self._shared is None or self._shared_storage is None:
            return self._local
        if self._down_since is None:
            return self._shared
        if time.monotonic() - self._down_since < RECHECK_SECONDS:
            return self._local
        if await self._shared_storage.check():
            logger.info("rate limit storage is reachable again")
            self._down_since = None
            return self._shared
        self._down_since = time.monotonic()
        return self._local

    async def _hit(self, item: limits.RateLimitItem, scope: str, key: str) -> None:
        if not self.enabled:
            return
        try:
            reset_at = await _refused_until(await self._limiter(), item, scope, key)
        except StorageError as exc:
            logger.warning(
                "rate limit storage unreachable, counting in memory: %r", exc.storage_error
            )
            self._down_since = time.monotonic()
            reset_at = await _refused_until(self._local, item, scope, key)
        if reset_at is not None:
            # Seconds until the oldest request in the window leaves it and frees a place.
            raise RateLimited(retry_after=max(1, math.ceil(reset_at - time.time())))


async def _refused_until(
    limiter: MovingWindowRateLimiter, item: limits.RateLimitItem, scope: str, key: str
) -> float | None:
    """Counts the request; None when it is allowed, else when the window frees a place."""
    if await limiter.hit(item, scope, key):
        return None
    return (await limiter.get_window_stats(item, scope, key)).reset_time
